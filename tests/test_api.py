"""The public Python API: a light ``import h2l``, one function per stage, ``h2l.Bundle`` verified like Rust and Go."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import h2l
from conftest import REPO, flip_byte, rand_queries, rehash
from h2l.bundle.reader import open_bundle
from h2l.errors import InputError, IntegrityError


def test_import_h2l_is_light():
    code = "import sys, h2l; h2l.Teacher; print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "src")}).stdout
    assert out.strip() == "[]"


def test_all_names_resolve_and_shadow_no_subpackage():
    subpackages = {p.name for p in (REPO / "src" / "h2l").iterdir() if (p / "__init__.py").is_file()}
    subpackages |= {p.stem for p in (REPO / "src" / "h2l").glob("*.py")}
    for name in h2l.__all__:
        assert getattr(h2l, name) is not None
        assert name not in subpackages, f"h2l.{name} shadows a subpackage or module"
    assert h2l.Teacher is h2l.model.teacher.Teacher
    import h2l.model.teacher as home
    assert not hasattr(home, "MultiHeadLDA")  # one name for one class
    with pytest.raises(AttributeError):
        h2l.no_such_thing  # noqa: B018


def test_stages_teacher_only(tmp_path, small_teacher):
    h2l.save_teacher(small_teacher, tmp_path / "t.npz")
    t = h2l.load_teacher(tmp_path / "t.npz")
    assert t.fingerprint() == small_teacher.fingerprint()
    res = h2l.export_bundle(t, tmp_path / "b")
    assert (res.out / "manifest.json").is_file()
    report = h2l.verify_bundle(tmp_path / "b")
    assert report.passed and report.checks
    b = h2l.Bundle.open(tmp_path / "b")
    assert b.dim == 32 and b.models == ("teacher",)
    q = rand_queries(5, 32, seed=1)
    got = b.project(q)
    assert got.dtype == np.float32 and got.shape == (5, 32)
    np.testing.assert_allclose(got, t.project(q)[0], atol=1e-5)
    np.testing.assert_array_equal(b.project(q, model="teacher"), got)  # auto = teacher without a student
    np.testing.assert_allclose(b.project(q[0]), got[:1], atol=1e-6)  # a single (d,) query
    with pytest.raises(InputError, match="no student model"):
        b.project(q, model="student")
    with pytest.raises(InputError, match="no routed model"):
        b.project(q, model="routed")
    with pytest.raises(InputError, match="not one of"):
        b.project(q, model="encoder")
    with pytest.raises(InputError, match=r"expected \(batch, 32\)"):
        b.project(np.zeros((2, 31), np.float32))


def test_bundle_open_with_student_uses_student_for_auto(rt_bundle):
    b = h2l.Bundle.open(rt_bundle)
    assert set(b.models) == {"teacher", "student"}
    golden = np.load(rt_bundle / "golden" / "inputs.npy")
    np.testing.assert_allclose(b.project(golden), np.load(rt_bundle / "golden" / "student.projected_embedding.npy"),
                               atol=1e-5)
    np.testing.assert_allclose(b.project(golden, model="teacher"),
                               np.load(rt_bundle / "golden" / "teacher.projected_embedding.npy"), atol=1e-5)
    assert len(b.teacher_sha256) == 64 and len(b.cluster_ids) == 10


def test_bundle_open_refuses_tampering(rt_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(rt_bundle, copy)
    p = copy / "student.onnx"
    flip_byte(p)
    with pytest.raises(IntegrityError, match="sha256"):
        h2l.Bundle.open(copy)
    shutil.copy(rt_bundle / "student.onnx", p)
    (copy / "golden" / "inputs.npy").write_bytes(b"x" * (copy / "golden" / "inputs.npy").stat().st_size)
    with pytest.raises(IntegrityError, match="golden/inputs.npy fails its sha256"):
        h2l.Bundle.open(copy)


def test_bundle_open_checks_the_io_contract(rt_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(rt_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["models"]["student"]["outputs"][0]["name"] = "renamed"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match="I/O contract"):
        h2l.Bundle.open(copy)


class _Spy:
    """Records what each real InferenceSession was built from (the session itself is real)."""

    def __init__(self, monkeypatch):
        self.sources: list = []
        real = ort.InferenceSession

        def make(src, *a, **k):
            self.sources.append(src)
            return real(src, *a, **k)
        monkeypatch.setattr(ort, "InferenceSession", make)


@pytest.mark.parametrize("entry", ["open", "verify"])
def test_sessions_come_from_the_verified_bytes(rt_bundle, monkeypatch, entry):
    spy = _Spy(monkeypatch)
    if entry == "open":
        h2l.Bundle.open(rt_bundle)
    else:
        h2l.verify_bundle(rt_bundle, min_cosine=0.9)
    assert spy.sources and all(isinstance(s, bytes) for s in spy.sources), [type(s) for s in spy.sources]
    on_disk = {(rt_bundle / f).read_bytes() for f in ("teacher.onnx", "student.onnx")}
    assert set(spy.sources) == on_disk


def test_read_verified_catches_a_swap_after_open(rt_bundle, tmp_path):
    """The check-then-use gap: a file replaced after the manifest was read is caught on the bytes loaded."""
    copy = tmp_path / "b"
    shutil.copytree(rt_bundle, copy)
    opened = open_bundle(copy, defer_models=True)
    data = flip_byte(copy / "teacher.onnx", -1)
    with pytest.raises(IntegrityError, match="teacher.onnx fails its sha256"):
        opened.read_verified("teacher.onnx")
    (copy / "teacher.onnx").write_bytes(data + b"\0")
    with pytest.raises(IntegrityError, match="bytes, manifest says"):
        opened.read_verified("teacher.onnx")


def test_rehashed_model_still_checked_by_contract(rt_bundle, tmp_path):
    """A model swapped for another valid graph, with its hash updated, fails the contract (not silently served)."""
    copy = tmp_path / "b"
    shutil.copytree(rt_bundle, copy)
    shutil.copy(copy / "teacher.onnx", copy / "student.onnx")
    rehash(copy, "student.onnx")
    with pytest.raises(IntegrityError, match="I/O contract"):
        h2l.Bundle.open(copy)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_project_refuses_non_finite_queries(tmp_path, small_teacher, bad):
    """NaN/Inf in (or a float64 overflowing float32) is refused like Rust and Go do, not projected to NaN."""
    h2l.export_bundle(small_teacher, tmp_path / "b")
    b = h2l.Bundle.open(tmp_path / "b")
    q = rand_queries(3, 32, seed=2).astype(np.float64)
    assert np.isfinite(b.project(q)).all()  # the control: finite queries project
    q[2, 5] = bad
    with pytest.raises(InputError, match="query 2 contains NaN or Inf") as e:
        b.project(q)
    assert e.value.exit_code == 3
