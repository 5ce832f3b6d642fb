"""Errors as documented: usage errors exit 2 (before any work), bad checkpoints exit 3, and verify --junit;
every error is one ``error: <problem>. fix: <fix>`` line on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

from conftest import REPO, listing, one_line_error
from h2l.cli import app
from h2l.distill.checkpoint import StudentCheckpoint, save_checkpoint
from h2l.export import export_onnx
from h2l.model.student import ProjectionTransformer, StudentConfig


def _ckpt(path, teacher, *, config: StudentConfig, weights_of: StudentConfig, sha: str | None = None):
    torch.manual_seed(0)
    state = ProjectionTransformer(weights_of).state_dict()
    save_checkpoint(path, StudentCheckpoint(config, state, sha or teacher.fingerprint(), {}, {"final": {}}, {}, True,
                                            None))
    return path


# ------------------------------------------------------------------ usage errors: exit 2

@pytest.mark.parametrize("args, message", [
    (["teacher", "import", "--out", "t.npz"], "pass exactly one of --lda-db, --npy-dir or --federated"),
    (["teacher", "import", "--out", "t.npz", "--lda-db", "a.db", "--npy-dir", "."], "exactly one of"),
    (["teacher", "import", "--out", "t.npz", "--npy-dir", "."], "needs --temperature"),
    (["distill", "t.npz", "--out", "s.pt", "--mix", "0.5,0.5"], "has 2 items, expected 3"),
    (["distill", "t.npz", "--out", "s.pt", "--mix", "a,b,c"], "not a number"),
    (["distill", "t.npz", "--out", "s.pt", "--mix", "-1,1,1"], "expected finite numbers ≥ 0"),
    (["distill", "t.npz", "--out", "s.pt", "--mix", "0,0,0"], "sums to 0"),
    (["distill", "t.npz", "--out", "s.pt", "--mix", "nan,1,1"], "expected finite numbers"),
    (["bench", "--sweep", "--n", "8,x"], "not an integer"),
    (["bench", "--sweep", "--batch", "0"], "expected integers ≥ 1"),
    (["bench", "--sweep", "--batch", "1,,2"], "empty item"),
    (["bench", "--sweep", "--provider", "cpu,tpu"], "unknown 'tpu'"),
    (["bench", "--sweep", "--providers", "cpu,tpu"], "unknown 'tpu'"),  # the old spelling, hidden
    (["bench"], "pass a bundle folder or --sweep"),
    (["bench", "b", "--sweep"], "pass a bundle folder or --sweep"),
    (["export", "--format", "npy", "t.npz", "--out", "o", "--json"], "--json does not apply"),
    (["export", "--format", "npy", "t.npz", "--out", "o", "--quantize", "int8"],
     "--quantize does not apply"),
    # onnx-only options given explicitly, even at their default value, are refused with --format npy
    (["export", "--format", "npy", "t.npz", "--out", "o", "--min-cosine", "0.98"],
     "--min-cosine does not apply"),
    (["export", "--format", "npy", "t.npz", "--out", "o", "--router", "screen"],
     "--router does not apply"),
    (["export", "--format", "npy", "t.npz", "--out", "o", "--router", "ivf", "--candidates", "3"],
     "--router, --candidates do not apply"),
    (["export", "t.npz", "--out", "o", "--mh-id", "2"], "--mh-id names the .npy files"),
    (["export", "t.npz", "--out", "o", "--router", "screen"], "--router applies to the routed teacher"),
    # click's own usage errors: the same one line, not typer's multi-line panel
    (["distill", "t.npz", "--out", "s.pt", "--arch", "foo"], "'foo' is not one of 'lean', 'transformer', 'memory'"),
    (["distill", "t.npz", "--out", "s.pt", "--precision", "fp8"], "'fp8' is not one of"),
    (["distill", "t.npz", "--out", "s.pt", "--bogus"], "no such option: --bogus"),
    (["distill", "t.npz"], "missing option '--out'"),
    (["export", "--format", "xml", "t.npz", "--out", "o"], "'xml' is not one of 'onnx', 'npy'"),
    (["verify", "b", "--provider", "tpu"], "'tpu' is not one of"),
    (["teacher", "nosuch"], "no such command 'nosuch'"),
])
def test_usage_errors_exit_2_before_any_work(runner, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    err = one_line_error(r, 2, message)
    assert "fix: " in err and "╭" not in r.output and "Usage:" not in r.output
    assert listing(tmp_path) == []


def test_a_click_error_names_the_commands_help(runner):
    err = one_line_error(runner.invoke(app, ["distill", "t.npz", "--bogus"]), 2)
    assert err.endswith("distill --help`"), err


def test_arch_and_precision_choices_are_the_libraries_own():
    from h2l.cli.app import Arch, Precision
    from h2l.distill.train import PRECISIONS
    from h2l.model.student import ARCHS

    assert tuple(a.value for a in Arch) == ARCHS and tuple(p.value for p in Precision) == PRECISIONS


def test_mix_validation_survives_python_O(tmp_path):
    """``python -O`` strips asserts; the --mix check must not be one."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    p = subprocess.run([sys.executable, "-O", "-m", "h2l", "distill", "t.npz", "--out", "s.pt", "--mix", "1,2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "expected 3" in p.stderr, p.stderr
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1 and ". fix: " in p.stderr, p.stderr
    assert listing(tmp_path) == []


# ------------------------------------------------------------------ checkpoints: exit 3

def test_export_refuses_checkpoint_whose_weights_do_not_fit_its_config(runner, tmp_path, small_teacher,
                                                                         teacher_npz):
    ck = _ckpt(tmp_path / "s.pt", small_teacher, config=StudentConfig(32, 4, 1, 64),
               weights_of=StudentConfig(32, 4, 1, 48))
    r = runner.invoke(app, ["export", str(teacher_npz), "--student", str(ck), "--out",
                            str(tmp_path / "b")])
    one_line_error(r, 3, "weights do not match its architecture")
    assert "Traceback" not in r.output
    assert not (tmp_path / "b").exists()


def test_bench_refuses_mismatched_checkpoints(runner, tmp_path, small_teacher):
    export_onnx(small_teacher, tmp_path / "b")
    bad_weights = _ckpt(tmp_path / "w.pt", small_teacher, config=StudentConfig(32, 4, 2, 64),
                        weights_of=StudentConfig(32, 4, 1, 64))
    r = runner.invoke(app, ["bench", str(tmp_path / "b"), "--student", str(bad_weights), "--quick"])
    one_line_error(r, 3, "weights do not match its architecture")
    other = _ckpt(tmp_path / "o.pt", small_teacher, config=StudentConfig(32, 4, 1, 64),
                  weights_of=StudentConfig(32, 4, 1, 64), sha="0" * 64)
    r = runner.invoke(app, ["bench", str(tmp_path / "b"), "--checkpoint", str(other), "--quick"])  # old spelling
    one_line_error(r, 3, "distilled from another teacher")


# ------------------------------------------------------------------ verify --junit

def _cases(path):
    root = ET.parse(path).getroot()
    assert root.tag == "testsuite"
    return root, root.findall("testcase")


def test_verify_junit_lists_every_check(runner, tmp_path, small_teacher):
    export_onnx(small_teacher, tmp_path / "b")
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu", "--json", "--junit",
                            str(tmp_path / "v.xml")])
    assert r.exit_code == 0, r.output
    import json
    checks = json.loads(r.stdout)["checks"]
    root, cases = _cases(tmp_path / "v.xml")
    assert len(cases) == len(checks) == int(root.get("tests")) and root.get("failures") == "0"
    assert {(c.get("classname"), c.get("name")) for c in cases} == \
        {(f"{c['model']}.{c['provider']}", c["check"]) for c in checks}
    assert not root.findall(".//failure")


def test_verify_junit_records_a_failed_gate_as_failure(runner, tmp_path, rt_bundle):
    r = runner.invoke(app, ["verify", str(rt_bundle), "--provider", "cpu", "--min-cosine", "0.999999",
                            "--junit", str(tmp_path / "v.xml")])
    one_line_error(r, 6, "parity")
    root, cases = _cases(tmp_path / "v.xml")
    failed = [c for c in cases if c.find("failure") is not None]
    assert failed and int(root.get("failures")) == len(failed)
    assert all(c.get("classname") == "student.cpu" and c.get("name").startswith("vs_teacher") for c in failed)
    assert failed[0].find("failure").get("type") == "parity" and "gate 0.999999" in failed[0].find("failure").text


def test_verify_junit_to_a_missing_folder_is_an_output_error(runner, tmp_path, small_teacher):
    export_onnx(small_teacher, tmp_path / "b")
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu", "--junit",
                            str(tmp_path / "nope" / "v.xml")])
    one_line_error(r, 4, "nope")
