"""Hostile bundles (issue 15, item 4): whatever a signed bundle holds, opening it reads nothing outside its folder.

Each case is built by hand with tests/hostile.py, then re-hashed and re-signed, so the bundle passes the
sha256 and signature checks and the refusal comes from the defence under test.  Each is refused from the
Python open path (IntegrityError) and from the CLI (`h2l verify --public-key`, exit 5, one line).
docs/reliability.md ("Hostile bundles") lists the cases.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import hostile
from h2l.bundle.guards import MAX_JSON_DEPTH, json_depth
from h2l.bundle.reader import open_bundle
from h2l.cli import app
from h2l.errors import IntegrityError

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return hostile.keypair(tmp_path_factory.mktemp("hostile_keys"))


@pytest.fixture
def b(tmp_path, rt_bundle, keys):
    """A signed copy of a bundle with a teacher and a student (conftest's rt_bundle)."""
    return hostile.signed_copy(rt_bundle, tmp_path / "b", keys[0])


def refused(runner, b, pub, *needles) -> str:
    with pytest.raises(IntegrityError) as exc:
        open_bundle(b, public_key=pub)
    line = exc.value.one_line()
    for n in needles:
        assert n in line, (n, line)
    r = runner.invoke(app, ["verify", str(b), "--public-key", str(pub), "--provider", "cpu"])
    assert r.exit_code == 5, (r.exit_code, r.output)
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and ". fix: " in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_the_unmodified_signed_copy_opens_and_verifies(b, keys, runner):
    """The control: every hostile case below starts from this bundle, which passes."""
    assert open_bundle(b, public_key=keys[1]).key_id
    r = runner.invoke(app, ["verify", str(b), "--public-key", str(keys[1]), "--provider", "cpu",
                            "--min-cosine", "0.9"])  # the gate rt_bundle was exported with
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------ ONNX external data

@pytest.mark.parametrize("model", ["teacher.onnx", "student.onnx"])
def test_external_data_outside_the_folder(b, keys, runner, model):
    hostile.external_data(b, keys[0], "../secret.bin", model=model)
    refused(runner, b, keys[1], f"{model} initializer", "stores its data outside the bundle ('../secret.bin')")


def test_external_data_at_an_absolute_path(b, keys, runner, tmp_path):
    hostile.external_data(b, keys[0], str(tmp_path / "abs.bin"))
    refused(runner, b, keys[1], "stores its data outside the bundle", "abs.bin")


def test_external_data_inside_but_not_listed(b, keys, runner):
    hostile.external_data(b, keys[0], "keys.bin")
    refused(runner, b, keys[1], "stores its data in 'keys.bin', which the manifest does not list")


def test_external_data_inside_and_listed_is_refused_as_external(b, keys, runner):
    """Hashed and signed external data passes the location checks above, then is refused for what it is:
    sessions are built from the verified bytes of one file, which cannot reach a second one."""
    hostile.external_data(b, keys[0], "data/keys.bin", listed=True)
    refused(runner, b, keys[1], "keeps tensor data in external files; bundles hold single-file models")


def test_external_data_outside_is_never_opened(b, keys, tmp_path):
    """The outside target is a FIFO: opening it to read would block, so a run that ends never opened it."""
    target = hostile.external_data(b, keys[0], "../secret.bin")
    hostile.make_fifo(target)
    p = subprocess.run([sys.executable, "-m", "h2l", "verify", str(b), "--public-key", str(keys[1]),
                        "--provider", "cpu"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 5, p.stderr
    assert "stores its data outside the bundle" in p.stderr


# ------------------------------------------------------------------ symlinks

def test_symlinked_model_outside(b, keys, runner):
    hostile.symlinked_model(b, keys[0], outside=True)
    refused(runner, b, keys[1], "'teacher.onnx' resolves outside the bundle")


def test_symlinked_model_inside(b, keys, runner):
    hostile.symlinked_model(b, keys[0], outside=False)
    refused(runner, b, keys[1], "'teacher.onnx' is a symlink")


def test_symlinked_manifest(b, keys, runner):
    hostile.symlinked_manifest(b, keys[0])
    refused(runner, b, keys[1], "manifest.json is a symlink")


def test_manifest_that_is_a_fifo_is_refused_without_blocking(b, keys):
    """Opening a FIFO to read blocks until a writer comes: the reader must check the file type first."""
    hostile.make_fifo(b / "manifest.json")
    p = subprocess.run([sys.executable, "-m", "h2l", "verify", str(b), "--public-key", str(keys[1]),
                        "--provider", "cpu"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 5, p.stderr
    assert "manifest.json is not a regular file" in p.stderr


# ------------------------------------------------------------------ manifest size, depth, strict JSON

def test_manifest_of_100_mb_is_refused_unread(b, keys, runner):
    hostile.huge_manifest(b, keys[0])
    assert (b / "manifest.json").stat().st_size == 100 * hostile.MB
    refused(runner, b, keys[1], "manifest.json is 104,857,600 bytes, over the 67,108,864-byte limit")


@pytest.mark.parametrize("depth, needle", [
    (MAX_JSON_DEPTH, f"nested {MAX_JSON_DEPTH + 1} levels deep, over the limit of {MAX_JSON_DEPTH}"),
    (100_000, "nested too deeply to parse"),  # Python's own parser would raise RecursionError
])
def test_deeply_nested_manifest(b, keys, runner, depth, needle):
    hostile.deep_manifest(b, keys[0], depth)
    refused(runner, b, keys[1], needle)


def test_nesting_within_the_limit_reaches_the_schema(b, keys, runner):
    """Depth 60 passes the depth guard; the unknown key is then refused by the schema, not the guard."""
    hostile.deep_manifest(b, keys[0], MAX_JSON_DEPTH - 4)
    err = refused(runner, b, keys[1], "does not match the manifest schema")
    assert "nested" not in err


@pytest.mark.parametrize("old, new, needle", [
    ('"name":', '"name": "decoy", "name":', "repeats the key 'name'"),
    ('"atol": 1e-05', '"atol": NaN', "holds NaN"),
    ('"atol": 1e-05', '"atol": Infinity', "holds Infinity"),
    ('"atol": 1e-05', '"atol": 1e999', "1e999 overflows"),
    ('"name":', '"name": "\\ud800", "x":', "does not match the manifest schema"),  # lone surrogate, then schema
])
def test_json_that_readers_would_disagree_on(b, keys, runner, old, new, needle):
    hostile.manifest_text(b, keys[0], lambda t: t.replace(old, new, 1))
    refused(runner, b, keys[1], needle)


def test_manifest_not_utf8(b, keys, runner):
    data = (b / "manifest.json").read_bytes()
    hostile.write_signed(b, data.replace(b'"h2l-bundle"', b'"h2l-bundle\xff"'), keys[0])
    refused(runner, b, keys[1], "manifest.json is not valid JSON")


# ------------------------------------------------------------------ wrong types in every manifest field

#: every field of the test bundle's manifest that a reader uses (list items by their first index)
FIELDS = [
    "schema_version", "format", "h2l_version", "name",
    "teacher", "teacher.n_heads", "teacher.dim", "teacher.temperature", "teacher.cluster_ids",
    "teacher.cluster_ids.0", "teacher.embedding_model", "teacher.sha256",
    "models", "models.teacher", "models.teacher.file", "models.teacher.role", "models.teacher.opset",
    "models.teacher.ir_version", "models.teacher.inputs", "models.teacher.inputs.0", "models.teacher.inputs.0.name",
    "models.teacher.inputs.0.dtype", "models.teacher.inputs.0.shape", "models.teacher.inputs.0.shape.0",
    "models.teacher.inputs.0.shape.1", "models.teacher.outputs", "models.teacher.outputs.0",
    "models.student", "models.student.file", "models.student.folded", "models.student.quantization",
    "models.student.architecture", "models.student.checkpoint_sha256", "models.student.source_check",
    "golden", "golden.inputs", "golden.outputs", "golden.outputs.teacher", "golden.outputs.teacher.projected_embedding",
    "golden.atol", "golden.rows", "golden.rows.0",
    "files", "files.0", "files.0.path", "files.0.sha256", "files.0.bytes",
    "versions", "versions.onnx",
    "verification", "verification.passed", "verification.provider", "verification.min_cosine",
    "verification.checks", "verification.checks.0", "verification.skipped", "verification.summary",
]

#: optional fields the test bundle lacks (tokenizer, answers, routed and encoder keys), added with a wrong type
ADDED = [
    ("tokenizer", "tokenizer.json"), ("answers", 3), ("golden.texts", 7),
    ("models.student.router", 1), ("models.student.candidates", "8"), ("models.student.bound", True),
    ("models.student.embedding_model", 384), ("models.student.max_seq_length", "256"),
]


def _shape(path: str) -> str:
    """A path with interchangeable names folded: student/teacher, inputs/outputs, golden and version keys."""
    path = re.sub(r"^models\.(teacher|student)", "models.M", path)
    path = re.sub(r"^models\.M\.outputs", "models.M.inputs", path)
    path = re.sub(r"^golden\.outputs\.\w+", "golden.outputs.X", path)
    path = re.sub(r"^golden\.outputs\.X\.\w+", "golden.outputs.X.Y", path)
    return re.sub(r"^versions\.\w+", "versions.V", path)


def test_field_list_covers_the_manifest(rt_bundle):
    """FIELDS names every key of a real manifest (free-form objects aside): a new field needs a case here."""
    free = {"models.M.architecture", "models.M.source_check", "verification.checks.0", "verification.summary",
            "verification.skipped.0"}

    def paths(node, prefix):
        items = node.items() if isinstance(node, dict) else enumerate(node[:1]) if isinstance(node, list) else []
        for k, v in items:
            p = f"{prefix}.{k}" if prefix else str(k)
            yield p
            if _shape(p) not in free:
                yield from paths(v, p)

    known = {_shape(f) for f in FIELDS}
    missing = [p for p in paths(json.loads((rt_bundle / "manifest.json").read_text()), "") if _shape(p) not in known]
    assert missing == [], missing


@pytest.mark.parametrize("field", FIELDS)
def test_wrong_type_in_a_field(b, keys, runner, field):
    value = hostile.get_field(hostile.manifest(b), field)
    hostile.set_field(b, keys[0], field, hostile.wrong_type(value))
    where = field.replace(".", "/")
    refused(runner, b, keys[1], "schema_version" if field == "schema_version" else where)


@pytest.mark.parametrize("field, value", ADDED)
def test_wrong_type_in_an_optional_field(b, keys, runner, field, value):
    hostile.set_field(b, keys[0], field, value)
    refused(runner, b, keys[1], "does not match the manifest schema", field.replace(".", "/"))


@pytest.mark.parametrize("field, value", [("schema_version", True), ("teacher.n_heads", 10.5),
                                          ("files.0.bytes", "2816"), ("verification.passed", 1)])
def test_near_miss_types(b, keys, runner, field, value):
    """Values Python would coerce (True == 1, "2816") are still the wrong JSON type."""
    hostile.set_field(b, keys[0], field, value)
    refused(runner, b, keys[1], field.replace(".", "/"))


# ------------------------------------------------------------------ hostile ONNX files

@pytest.mark.parametrize("model", ["teacher.onnx", "student.onnx"])
def test_onnx_bomb_initializer(b, keys, runner, model):
    hostile.onnx_bomb(b, keys[0], model=model)
    refused(runner, b, keys[1], f"{model} initializer", "declares shape [1099511627776")


def test_onnx_bomb_constant_node(b, keys, runner):
    hostile.onnx_typed_bomb(b, keys[0])
    refused(runner, b, keys[1], "node 'bomb' attribute 'value' declares shape [1099511627776]")


@pytest.mark.parametrize("model", ["teacher.onnx", "student.onnx"])
@pytest.mark.parametrize("keep", [0.01, 0.5, 0.99])
def test_truncated_onnx(b, keys, runner, model, keep):
    hostile.truncated_onnx(b, keys[0], keep, model=model)
    refused(runner, b, keys[1], f"{model} is not a readable ONNX model")


def test_onnx_cut_at_a_field_boundary(b, keys, runner):
    """The prefix parses (a model with no graph): the ONNX checker refuses it before any session."""
    hostile.truncated_onnx_at_field(b, keys[0])
    refused(runner, b, keys[1], "teacher.onnx fails the ONNX checker")


def test_zip_bomb_as_onnx(b, keys, runner):
    hostile.zip_onnx(b, keys[0])
    refused(runner, b, keys[1], "teacher.onnx is not a readable ONNX model")


def test_onnx_over_2_gib_is_refused_unread(b, keys, runner):
    hostile.oversize_onnx(b, keys[0])
    refused(runner, b, keys[1], "model file teacher.onnx is 2,147,487,744 bytes", "refused unread")


def test_json_depth_is_iterative():
    deep: list = []
    node = deep
    for _ in range(50_000):
        node.append([])
        node = node[0]
    assert json_depth(deep) == 50_001
