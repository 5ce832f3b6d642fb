import numpy as np
import pytest

from conftest import rand_queries
from h2l.errors import InputError
from h2l.importers.npz import load_npz, save_npz
from h2l.model.teacher import NORM_EPS, check_queries, make_teacher


def reference(q, c, a, tau):
    """Float64 textbook formula, independent of h2l's float32 path."""
    q = np.atleast_2d(q).astype(np.float64)
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), NORM_EPS)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    s = qn @ cn.T / tau
    w = np.exp(s - s.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return w @ a, w


def test_project_matches_formula_single_and_batch(small_teacher):
    t = small_teacher
    q = rand_queries(5, t.dim)
    p, w = t.project(q)
    rp, rw = reference(q, t.centroids.astype(np.float64), t.answers.astype(np.float64), t.temperature)
    assert p.shape == (5, t.dim) and w.shape == (5, t.n_heads) and p.dtype == np.float32
    assert np.abs(p - rp).max() < 1e-5 and np.abs(w - rw).max() < 1e-5
    p1, w1 = t.project(q[2])
    assert np.abs(p1[0] - p[2]).max() < 1e-6
    assert np.allclose(w.sum(1), 1, atol=1e-6)


def test_zero_query_is_defined_mean_answer(small_teacher):
    p, w = small_teacher.project(np.zeros(small_teacher.dim))
    assert np.isfinite(p).all()
    assert np.allclose(w, 1 / small_teacher.n_heads, atol=1e-7)
    assert np.allclose(p[0], small_teacher.answers.mean(0), atol=1e-6)


def test_float64_queries_are_cast_not_refused(small_teacher):
    q = rand_queries(2, small_teacher.dim).astype(np.float64)
    assert check_queries(q, small_teacher.dim).dtype == np.float32


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 7), np.float32), "dimension 7"),
    (np.full((1, 32), np.nan, np.float32), "NaN or Inf"),
    (np.zeros((0, 32), np.float32), "batch is empty"),
    (np.array([["a"] * 32]), "dtype"),
])
def test_bad_queries(small_teacher, bad, message):
    with pytest.raises(InputError, match=message):
        small_teacher.project(bad)


C = np.eye(3, 4, dtype=np.float32) + 0.1
A = np.ones((3, 4), np.float32)


@pytest.mark.parametrize("kwargs, message", [
    (dict(centroids=C, answers=A[:2]), "differ in shape"),
    (dict(centroids=np.zeros((0, 4)), answers=np.zeros((0, 4))), "N = 0"),
    (dict(centroids=np.where(np.eye(3, 4) > 0, np.nan, C), answers=A), "NaN or Inf"),
    (dict(centroids=C, answers=np.where(np.eye(3, 4) > 0, np.inf, A)), "answers row 0"),
    (dict(centroids=np.vstack([C[:2], np.zeros((1, 4))]), answers=A), "row 2 has zero norm"),
    (dict(centroids=C, answers=A, temperature=0.0), "must be finite and > 0"),
    (dict(centroids=C, answers=A, temperature=-1.0), "must be finite and > 0"),
    (dict(centroids=C, answers=A, temperature=float("inf")), "must be finite and > 0"),
    (dict(centroids=C, answers=A, temperature=float("nan")), "must be finite and > 0"),
    (dict(centroids=C, answers=A, cluster_ids=["a", "a", "b"]), "duplicate cluster id"),
    (dict(centroids=C[0], answers=A[0]), "expected \\(N, d\\)"),
])
def test_teacher_validation(kwargs, message):
    kwargs = {"temperature": 0.1, **kwargs}
    with pytest.raises(InputError, match=message):
        make_teacher(**kwargs)


def test_npz_roundtrip_and_stable_bytes(tmp_path, small_teacher):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    save_npz(small_teacher, a)
    save_npz(load_npz(a), b)
    assert a.read_bytes() == b.read_bytes()
    t = load_npz(a)
    assert t.fingerprint() == small_teacher.fingerprint()
    assert np.array_equal(t.queries.heldout, small_teacher.queries.heldout)
    assert t.cluster_ids == small_teacher.cluster_ids


def test_npz_with_pickled_object_is_refused(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, centroids=np.array([object()], dtype=object), answers=np.ones((1, 2)), temperature=0.1)
    with pytest.raises(InputError, match="pickled object, refused"):
        load_npz(p)


def test_npz_missing_keys_and_garbage(tmp_path):
    p = tmp_path / "partial.npz"
    np.savez(p, centroids=np.ones((2, 3)))
    with pytest.raises(InputError, match="lacks key\\(s\\) answers, temperature"):
        load_npz(p)
    g = tmp_path / "garbage.npz"
    g.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_npz(g)
