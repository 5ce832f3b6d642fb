"""The routed teacher: the bound (property tests), exactness at K = N, ONNX vs numpy, export and verify."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from conftest import flip_byte, one_line_error
from h2l.bundle.files import file_entries
from h2l.bundle.layout import json_bytes
from h2l.cli import app
from h2l.errors import IntegrityError, ParityError
from h2l.exporters.onnx_common import check, serialize
from h2l.exporters.onnx_routed import make_routed_model
from h2l.metrics import cosine
from h2l.model.routing import (
    best_m,
    certified_k,
    effective_heads,
    flat_weights,
    float32_slack,
    implied_error,
    make_screen,
    route,
    skipped_mass,
)
from h2l.model.sampling import far_off_queries, near_centroid_queries
from h2l.model.synthetic import synthetic_teacher
from h2l.model.teacher import make_teacher
from h2l.runtime.sessions import make_runner
from h2l.verify.checks import verify_bundle
from h2l.verify.report import raise_for_failures


def _teacher(n: int, d: int, tau: float, seed: int):
    return synthetic_teacher(n, d, temperature=tau, seed=seed)


def _queries(t, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([near_centroid_queries(t.keys, t.temperature, m, seed),
                           far_off_queries(t.keys, t.temperature, m, seed + 1),
                           rng.standard_normal((m, t.dim)).astype(np.float32) * rng.uniform(0.01, 10),
                           np.zeros((1, t.dim), np.float32)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 300), d=st.integers(2, 96), tau=st.floats(0.005, 1.0), k=st.integers(1, 64),
       seed=st.integers(0, 10_000))
@example(n=127, d=96, tau=0.005859375, k=4, seed=15)  # float32 rounding at τ ≈ 0.006 once broke a fixed 1e-5 slack
def test_bound_is_never_below_the_true_skipped_mass(n, d, tau, k, seed):
    t = _teacher(n, d, tau, seed)
    q = _queries(t, 6, seed)
    r = route(make_screen(t.keys, t.answers), q, k)
    true = skipped_mass(flat_weights(t.keys, q), r.top_heads)
    assert (r.bound.astype(np.float64) >= true * (1 - 1e-5)).all(), (r.bound, true)
    # and what it implies for the output holds against the flat float32 teacher
    flat, _ = t.project(q)
    dev = np.linalg.norm(r.projected.astype(np.float64) - flat, axis=1)
    assert (dev <= implied_error(r.bound, t.answers) + float32_slack(t.temperature, t.answers)).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(64, 512), d=st.integers(16, 128), seed=st.integers(0, 10_000))
def test_bound_is_tight_where_the_teacher_is_peaked(n, d, seed):
    t = _teacher(n, d, 0.01, seed)
    q = near_centroid_queries(t.keys, t.temperature, 16, seed)
    r = route(make_screen(t.keys, t.answers), q, min(16, n))
    true = skipped_mass(flat_weights(t.keys, q), r.top_heads)
    assert np.median(r.bound) <= 1e-4
    # tight: never more than e^(2·screen error/τ) above the truth, plus float32 noise on 1e-30-size masses
    assert (r.bound <= true * 1e3 + 1e-12).all(), np.max(r.bound / np.maximum(true, 1e-300))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 120), d=st.integers(1, 64), tau=st.floats(0.01, 2.0), seed=st.integers(0, 10_000))
def test_routed_equals_flat_when_every_head_is_a_candidate(n, d, tau, seed):
    t = _teacher(n, d, tau, seed) if n > 1 and d > 1 else make_teacher(
        np.random.default_rng(seed).standard_normal((n, d)) + 0.1, np.ones((n, d)), tau)
    q = _queries(t, 4, seed)
    r = route(make_screen(t.keys, t.answers), q, n)
    flat, w = t.project(q)
    assert np.abs(r.projected - flat).max() <= float32_slack(t.temperature, t.answers)
    assert (r.bound == 0).all()
    assert np.abs(np.take_along_axis(w, r.top_heads, axis=1) - r.top_weights).max() <= 1e-5


def test_onnx_routed_equals_the_numpy_reference():
    t = _teacher(700, 48, 0.03, 5)
    index = make_screen(t.keys, t.answers)
    for k in (1, 40, 700):
        proto = make_routed_model(index, k, {})
        check(proto)
        got = make_runner(serialize(proto, "r"), "cpu").run(_queries(t, 8, 1))
        ref = route(index, _queries(t, 8, 1), k)
        np.testing.assert_array_equal(got["top_heads"], ref.top_heads)
        np.testing.assert_allclose(got["top_weights"], ref.top_weights, atol=1e-6)
        np.testing.assert_allclose(got["projected_embedding"], ref.projected, atol=1e-6)
        np.testing.assert_allclose(got["neglected_mass_bound"], ref.bound, rtol=1e-5, atol=1e-7)
        assert got["top_heads"].dtype == np.int64 and got["top_heads"].shape == (25, k)


def test_measures_of_a_teacher():
    w = np.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.3, 0.2, 0.0]])
    np.testing.assert_allclose(effective_heads(w)[:2], [1.0, 4.0])
    np.testing.assert_array_equal(best_m(w, 0.1), [1, 4, 3])
    np.testing.assert_array_equal(best_m(w, 0.25), [1, 3, 2])
    t = _teacher(256, 32, 0.01, 2)
    q = near_centroid_queries(t.keys, t.temperature, 8, 0)
    ck = certified_k(make_screen(t.keys, t.answers), q, 1e-4)
    assert ((ck >= best_m(flat_weights(t.keys, q), 1e-4)) & (ck <= 256)).all()


# ------------------------------------------------------------------ export, verify, CLI

@pytest.fixture(scope="module")
def routed_bundle(tmp_path_factory):
    from h2l.export import export_onnx

    t = synthetic_teacher(300, 32, temperature=0.03, queries_per_head=1, heldout_per_head=1, seed=4)
    out = tmp_path_factory.mktemp("routed") / "bundle"
    export_onnx(t, out, routed=True)
    return out


def test_export_routed_writes_the_contract(routed_bundle):
    m = json.loads((routed_bundle / "manifest.json").read_text())
    r = m["models"]["routed"]
    assert (r["file"], r["role"], r["router"], r["bound"]) == ("teacher_routed.onnx", "routed_teacher", "screen",
                                                               "proven")
    k = r["candidates"]
    assert [o["name"] for o in r["outputs"]] == ["projected_embedding", "top_heads", "top_weights",
                                                 "neglected_mass_bound"]
    assert [o["dtype"] for o in r["outputs"]] == ["float32", "int64", "float32", "float32"]
    assert r["outputs"][1]["shape"] == ["batch", k] and r["outputs"][3]["shape"] == ["batch"]
    assert [i["name"] for i in r["inputs"]] == ["query_embedding"]
    heads = np.load(routed_bundle / m["golden"]["outputs"]["routed"]["top_heads"])
    assert heads.dtype == np.dtype("<i8") and heads.shape[1] == k
    assert np.load(routed_bundle / m["golden"]["outputs"]["routed"]["top_weights"]).dtype == np.dtype("<f4")
    assert m["verification"]["passed"]
    report = json.loads((routed_bundle / "reports" / "routing.json").read_text())
    assert report["profile"]["effective_heads"]["median"] >= 1.0 and report["verdict"]
    assert not any(int(o["shape"][-1]) == 300 for o in r["outputs"] if len(o["shape"]) > 1)  # never O(N)


def _rewrite(bundle, edit) -> None:
    """Hand-edit teacher_routed.onnx, then re-hash the manifest as a careless editor would."""
    path = bundle / "teacher_routed.onnx"
    model = onnx.load(str(path))
    edit(model)
    path.write_bytes(model.SerializeToString())
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"] = file_entries(bundle)
    (bundle / "manifest.json").write_bytes(json_bytes(m))


def test_verify_catches_a_broken_bound(routed_bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(routed_bundle, bad)

    def shrink_bound(model):  # bound ← bound · 1e-3: numbers look plausible, the certificate is false
        nodes = list(model.graph.node)
        i = next(j for j, n in enumerate(nodes) if n.name == "bound_col")
        nodes[i].output[0] = "bound_raw"
        nodes.insert(i + 1, helper.make_node("Mul", ["bound_raw", "tiny"], ["bound_col"], name="shrink"))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.initializer.append(numpy_helper.from_array(np.array([1e-3], np.float32), "tiny"))
    _rewrite(bad, shrink_bound)
    report = verify_bundle(bad, provider="cpu")
    failed = {c.check for c in report.failures()}
    assert any(c.startswith("bound_holds:") for c in failed), failed
    assert not any(c.startswith("golden:") and c != "golden:neglected_mass_bound" for c in failed)
    with pytest.raises(ParityError):
        raise_for_failures(report)


def test_verify_refuses_an_edited_screen(routed_bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(routed_bundle, bad)

    def zero_rho(model):  # claims a smaller screen error than the int8 copy really has
        for i, init in enumerate(model.graph.initializer):
            if init.name == "rho":
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.array([0.0], np.float32), "rho"))
    _rewrite(bad, zero_rho)
    report = verify_bundle(bad, provider="cpu")
    assert "same_teacher" in {c.check for c in report.failures()}
    with pytest.raises(IntegrityError):
        raise_for_failures(report)


def test_cli_export_routed_and_verify(runner, tmp_path):
    from h2l.importers.npz import save_npz

    t = synthetic_teacher(64, 24, temperature=0.5, seed=1)  # spread: nothing can be skipped
    save_npz(t, tmp_path / "t.npz")
    res = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--out", str(tmp_path / "b"),
                              "--routed"])
    assert res.exit_code == 0, res.output
    assert "cannot be exact" in res.output
    res = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--out", str(tmp_path / "c"),
                              "--routed", "--candidates", "0"])
    one_line_error(res, 3, "--candidates 0 must be ≥ 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "t.npz"]  # no bundle, no staging folder
    res = runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu"])
    assert res.exit_code == 0, res.output
    assert "routed vs flat teacher" in res.output
    checks = json.loads(runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu", "--json"]).stdout)
    routed = {c["check"].split(":")[0] for c in checks["checks"] if c["model"] == "routed" and c["passed"]}
    assert {"bound_holds", "batch_consistency", "vs_numpy", "vs_flat"} <= routed, routed
    assert not [c for c in checks["checks"] if not c["passed"]]


def test_routed_cosine_on_a_peaked_teacher():
    t = _teacher(2048, 64, 0.02, 0)
    q = near_centroid_queries(t.keys, t.temperature, 64, 3)
    r = route(make_screen(t.keys, t.answers), q, 64)
    flat, _ = t.project(q)
    assert cosine(r.projected, flat).min() >= 0.999


def test_bench_sweep_times_and_measures_the_routed_teacher(runner, tmp_path):
    r = runner.invoke(app, ["bench", "--sweep", "--n", "64,256", "--embed-dim", "16", "--quick", "--provider", "cpu",
                            "--batch", "1,4", "--temperature", "0.02", "--json", "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {(x["model"], x["variant"]) for x in doc["results"]} >= {("routed", "ort_screen"), ("teacher", "ort"),
                                                                     ("student", "ort_folded")}
    fid = {(f["n"], f["model"], f["source"]): f for f in doc["fidelity"]}
    assert set(fid) == {(n, "routed", s) for n in (64, 256) for s in ("near_centroid", "far_off")}
    assert all(0 <= f["median_bound"] <= 1 and -1 <= f["min_cosine"] <= f["mean_cosine"] <= 1 for f in fid.values())
    assert doc["candidates"] == {"64": 32, "256": 32}
    for b in (1, 4):
        assert (tmp_path / f"s_batch{b}.png").read_bytes()[:4] == b"\x89PNG"


def test_teacher_info_says_how_routable_a_teacher_is(runner, tmp_path):
    from h2l.importers.npz import save_npz

    save_npz(synthetic_teacher(400, 32, temperature=0.01, seed=1), tmp_path / "peaked.npz")
    save_npz(synthetic_teacher(400, 32, temperature=1.0, seed=1), tmp_path / "spread.npz")
    r = runner.invoke(app, ["teacher", "info", str(tmp_path / "peaked.npz"), "--json"])
    assert r.exit_code == 0, r.output
    prof = json.loads(r.stdout)["routing"]
    assert prof["routable"] and prof["effective_heads"]["median"] < 2
    need = prof["candidates_needed"]["0.0001"]
    assert 1 <= need["best_m"]["median"] <= need["certified_k"]["median"] <= 400
    r = runner.invoke(app, ["teacher", "info", str(tmp_path / "spread.npz")])
    assert r.exit_code == 0 and "effective heads" in r.output and "cannot be exact" in r.output


def test_bench_sweep_measures_a_trained_student_when_its_teacher_matches(runner, tmp_path):
    from h2l.importers.npz import save_npz

    save_npz(synthetic_teacher(32, 16, temperature=0.05, seed=0), tmp_path / "t.npz")  # the sweep's N = 32 teacher
    r = runner.invoke(app, ["distill", str(tmp_path / "t.npz"), "--out", str(tmp_path / "s.pt"), "--steps", "4",
                            "--heads", "2", "--layers", "1", "--ff-dim", "32", "--batch-size", "64",
                            "--eval-every", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["bench", "--sweep", "--n", "32,64", "--embed-dim", "16", "--quick", "--provider", "cpu",
                            "--batch", "1", "--temperature", "0.05", "--student", str(tmp_path / "s.pt"),
                            "--json"])
    assert r.exit_code == 0, r.output
    fid = {(f["n"], f["model"], f["variant"]) for f in json.loads(r.stdout)["fidelity"]}
    assert {(32, "student", "ort_folded"), (32, "student", "ort_int8")} <= fid
    assert not any(n == 64 and m == "student" for n, m, _ in fid)  # a student of another teacher is not measured


@pytest.mark.parametrize("router", ["screen", "ivf"])
def test_routed_export_is_byte_stable(tmp_path, router):
    from h2l.export import export_onnx

    t = synthetic_teacher(120, 16, temperature=0.03, seed=6)
    for name in ("a", "b"):
        export_onnx(t, tmp_path / name, routed=True, router=router)
    a, b = ((tmp_path / n / "manifest.json").read_bytes() for n in ("a", "b"))
    assert a == b and (tmp_path / "a" / "teacher_routed.onnx").read_bytes() == \
        (tmp_path / "b" / "teacher_routed.onnx").read_bytes()


def test_bench_refuses_a_tampered_routed_teacher(routed_bundle, runner, tmp_path):
    """bench loads teacher_routed.onnx from its verified bytes: a flipped byte is exit 5, never timed."""
    import shutil

    b = tmp_path / "b"
    shutil.copytree(routed_bundle, b)
    flip_byte(b / "teacher_routed.onnx")
    r = runner.invoke(app, ["bench", str(b), "--provider", "cpu", "--batch", "1", "--quick"])
    assert r.exit_code == 5, r.output
    assert "teacher_routed.onnx fails its sha256 check" in r.stderr


def test_router_options_without_routed_are_usage_errors(runner, tmp_path):
    t = tmp_path / "t.npz"
    from h2l.importers.npz import save_npz

    save_npz(synthetic_teacher(8, 16, seed=1), t)
    for extra in (["--candidates", "4"], ["--router", "ivf"]):
        r = runner.invoke(app, ["export", str(t), "--out", str(tmp_path / "o"), *extra])
        assert r.exit_code == 2, r.output
        assert "applies to the routed teacher" in r.stderr
        assert not (tmp_path / "o").exists()
