"""--router ivf: padded and empty groups, ONNX vs numpy, and an output named (and treated) as an estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from h2l.exporters.onnx_common import check, serialize
from h2l.exporters.onnx_routed_ivf import make_ivf_model
from h2l.model.routing_ivf import make_ivf, make_ivf_from_labels, route_ivf
from h2l.model.sampling import far_off_queries, near_centroid_queries
from h2l.model.synthetic import synthetic_teacher
from h2l.runtime.sessions import make_runner
from h2l.verify.checks import verify_bundle


@pytest.fixture(scope="module")
def teacher():
    return synthetic_teacher(200, 24, temperature=0.05, seed=2)


def _q(t):
    return np.concatenate([near_centroid_queries(t.keys, t.temperature, 12, 1),
                           far_off_queries(t.keys, t.temperature, 6, 2), np.zeros((1, t.dim), np.float32)])


def test_padded_and_empty_groups(teacher):
    # 9 groups of sizes 1, 2, 3, 0, 49, 49, 48, 0, 48: unequal (so rows are padded), and groups 3 and 7 empty
    labels = np.array([0, 1, 1, 2, 2, 2] + [4, 5, 6, 8] * 48 + [4, 5])
    index = make_ivf_from_labels(teacher.keys, teacher.answers, labels, 9, probes=3)
    sizes = np.bincount(labels, minlength=9)
    assert (index.group_sizes == sizes).all() and sizes[3] == sizes[7] == 0
    assert index.members.shape == (9, sizes.max())
    padded = index.member_mask < 0
    assert padded.sum() == 9 * sizes.max() - 200
    assert (index.group_mask[[3, 7]] < 0).all() and (index.group_mask[sizes > 0] == 0).all()
    proto = make_ivf_model(index, {})
    check(proto)
    q = _q(teacher)
    got = make_runner(serialize(proto, "ivf"), "cpu").run(q)
    ref = route_ivf(index, q)
    np.testing.assert_array_equal(got["top_heads"], ref.top_heads)
    np.testing.assert_allclose(got["projected_embedding"], ref.projected, atol=1e-6)
    np.testing.assert_allclose(got["neglected_mass_estimate"], ref.bound, rtol=1e-5, atol=1e-7)
    assert "neglected_mass_bound" not in got
    # the probed groups are never empty ones, and a padded slot never gets weight
    k = index.candidates
    assert got["top_heads"].shape == (len(q), k)
    heads_labels = labels[got["top_heads"]]
    assert not np.isin(heads_labels, [3, 7]).any()
    for row_w, row_h in zip(got["top_weights"], got["top_heads"], strict=True):
        real = len(set(row_h.tolist()))
        assert (row_w[real:] == 0).all() and abs(row_w.sum() - 1) < 1e-5


def test_kmeans_groups_are_seeded_and_cover_every_head(teacher):
    a, b = make_ivf(teacher.keys, teacher.answers, seed=0), make_ivf(teacher.keys, teacher.answers, seed=0)
    np.testing.assert_array_equal(a.members, b.members)
    real = a.members[a.member_mask == 0]
    assert sorted(real.tolist()) == list(range(200))


def test_all_groups_probed_is_the_flat_teacher(teacher):
    index = make_ivf(teacher.keys, teacher.answers, groups=7, probes=7, seed=1)
    q = _q(teacher)
    flat, _ = teacher.project(q)
    r = route_ivf(index, q)
    assert np.abs(r.projected - flat).max() <= 1e-5 and (r.bound == 0).all()


def test_export_ivf_is_an_estimate(tmp_path, teacher):
    from h2l.export import export_onnx

    export_onnx(teacher, tmp_path / "b", routed=True, router="ivf")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    r = m["models"]["routed"]
    assert (r["router"], r["bound"]) == ("ivf", "estimate")
    assert r["outputs"][-1]["name"] == "neglected_mass_estimate"
    report = verify_bundle(tmp_path / "b", provider="cpu")
    assert report.passed
    names = {c.check for c in report.checks if c.model == "routed"}
    assert not any(n.startswith("bound_holds") for n in names) and "vs_numpy:far_off" in names
    assert "ESTIMATE" in json.loads((tmp_path / "b" / "reports" / "routing.json").read_text())["note"]
