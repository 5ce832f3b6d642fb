"""``h2l bench DIR`` times the bundle's shipped files (issue 20, item 14), not graphs it re-exports."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest

from h2l.bench.suites import bench_bundle
from h2l.cli import app
from h2l.export import export_onnx
from h2l.importers.npz import load_npz
from h2l.runtime import sessions


class _Sources:
    """The bytes every real runner was built from (the sessions themselves are real); a model opened by
    path is recorded by its path."""

    def __init__(self, monkeypatch):
        self.seen: list[bytes | str] = []
        real, real_lean = ort.InferenceSession, sessions.lean_source

        def lean(data, so):  # make_runner's bytes, before the large initializers are split off
            self.seen.append(bytes(data))
            return real_lean(data, so)

        def session(src, *a, **k):
            if not isinstance(src, bytes):
                self.seen.append(str(src))
            return real(src, *a, **k)
        monkeypatch.setattr(sessions, "lean_source", lean)
        monkeypatch.setattr(ort, "InferenceSession", session)


def test_bench_dir_times_the_verified_shipped_bytes(rt_bundle, monkeypatch):
    """With the checkpoint it used to re-export folded, unfolded and int8 students and a teacher from arrays;
    every session must now be built from a model file of the bundle, and each shipped model is timed."""
    spy = _Sources(monkeypatch)
    report = bench_bundle(rt_bundle, checkpoint=rt_bundle.parent / "s.pt", providers={"cpu", "torch"},
                          batches=[1], threads=1, quick=True)
    shipped = {(rt_bundle / f).read_bytes() for f in ("teacher.onnx", "student.onnx")}
    assert spy.seen and set(spy.seen) <= shipped, "a session was built from bytes the bundle does not ship"
    assert set(spy.seen) == shipped
    variants = {(r["model"], r["variant"], r["provider"]) for r in report["results"]}
    assert variants == {("teacher", "numpy", "cpu"), ("teacher", "ort", "cpu"), ("student", "ort_folded", "cpu"),
                        ("student", "torch_eager", "cpu")}
    assert report["timed_files"] == {"teacher": "teacher.onnx", "student": "student.onnx"}


def test_bench_dir_names_the_shipped_variant_and_reports_its_fidelity(rt_bundle, tmp_path, runner):
    """An int8 bundle is timed as what it is; a full run reports the shipped student's fidelity."""
    out = export_onnx(load_npz(rt_bundle.parent / "t.npz"), tmp_path / "q", student=rt_bundle.parent / "s.pt",
                      quantize="int8", min_cosine=0.9).out
    r = runner.invoke(app, ["bench", str(out), "--providers", "cpu", "--batch", "1", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {(x["model"], x["variant"]) for x in doc["results"]} == {("teacher", "numpy"), ("teacher", "ort"),
                                                                    ("student", "ort_int8")}
    fid = doc["fidelity"]["ort_int8"]
    assert fid["bytes"] == (out / "student.onnx").stat().st_size and 0.9 <= fid["mean_cosine"] <= 1.0


@pytest.mark.parametrize("router", ["screen", "ivf"])
def test_bench_dir_times_the_shipped_routed_teacher(rt_routed_bundles, monkeypatch, router):
    b = rt_routed_bundles[0 if router == "screen" else 1]
    spy = _Sources(monkeypatch)
    report = bench_bundle(b, checkpoint=None, providers={"cpu"}, batches=[1], threads=1, quick=True)
    assert set(spy.seen) == {(b / f).read_bytes() for f in ("teacher.onnx", "teacher_routed.onnx")}
    assert ("routed", f"ort_{router}", "cpu") in {(r["model"], r["variant"], r["provider"]) for r in report["results"]}
