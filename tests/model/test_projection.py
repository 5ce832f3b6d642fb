"""The general numpy reference against the formula written out in float64 (teacher_spec), case by case."""

import numpy as np
import pytest

from conftest import rand_queries
from h2l.model.projection import Routing, Scoring, project_arrays, top_indices
from h2l.model.teacher import make_teacher


def formula(q, c, b, tau, *, W=None, key_heads=None, query_norm="floor", eps=1e-12, normalize_keys=True,
            top_k=None, renormalize=True, normalize_output=False):
    """y = Σ_h α_h (q W_h) + α b, α_h = Σ_{j→h} w_j, written plainly in float64, one query at a time."""
    q = np.atleast_2d(q).astype(np.float64)
    c = c.astype(np.float64)
    k = c / np.linalg.norm(c, axis=1, keepdims=True) if normalize_keys else c
    ys, ws = [], []
    for x in q:
        n = np.linalg.norm(x)
        xn = {"floor": x / max(n, eps), "add": x / (n + eps), "none": x}[query_norm]
        s = k @ xn / tau
        w = np.exp(s - s.max())
        w /= w.sum()
        if top_k is not None:
            keep = sorted(range(len(s)), key=lambda j: (-s[j], j))[:top_k]  # ties: lower index first
            mask = np.zeros_like(w)
            mask[keep] = 1
            w = w * mask
            if renormalize:
                w /= w.sum()
        heads = np.arange(len(c)) if key_heads is None else key_heads
        alpha = np.zeros(len(b))
        for j, h in enumerate(heads):
            alpha[h] += w[j]
        y = alpha @ b.astype(np.float64)
        if W is not None:
            y = y + sum(alpha[h] * (x @ W[h].astype(np.float64)) for h in range(len(b)))
        if normalize_output:
            y = y / np.linalg.norm(y)
        ys.append(y)
        ws.append(w)
    return np.array(ys), np.array(ws)


def parts(n_keys=9, n_heads=4, d=6, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n_keys, d)).astype(np.float32)
    b = rng.standard_normal((n_heads, d)).astype(np.float32)
    W = rng.standard_normal((n_heads, d, d)).astype(np.float32)
    kh = np.concatenate([np.arange(n_heads), rng.integers(0, n_heads, n_keys - n_heads)])
    return c, b, W, kh


@pytest.mark.parametrize("scoring", [Scoring(), Scoring("add", 1e-8, False), Scoring("none", 0.0, False),
                                     Scoring("floor", 1e-12, False)])
@pytest.mark.parametrize("routing", [Routing(), Routing(3, True), Routing(3, False), Routing(1, True)])
@pytest.mark.parametrize("shared, affine, norm_out", [(False, True, False), (True, True, False), (True, False, True),
                                                     (False, True, True)])
def test_general_matches_formula(scoring, routing, shared, affine, norm_out):
    c, b, W, kh = parts()
    if not shared:
        c, kh = c[:4], None
    t = make_teacher(c, b, 0.7, head_weights=W if affine else None, key_heads=kh, scoring=scoring, routing=routing,
                     normalize_output=norm_out)
    q = rand_queries(7, 6, seed=4)
    q[3] *= 1e-3  # a short query: the eps rule of each scoring matters only for tiny norms, but must be the one used
    y, w = t.project(q)
    ry, rw = formula(q, c, b, 0.7, W=W if affine else None, key_heads=kh, query_norm=scoring.query_norm,
                     eps=scoring.eps, normalize_keys=scoring.normalize_keys, top_k=routing.top_k,
                     renormalize=routing.renormalize, normalize_output=norm_out)
    assert y.dtype == np.float32 and w.shape == (7, t.n_keys)
    assert np.abs(w - rw).max() < 1e-6
    assert np.abs(y - ry).max() < 1e-5 * max(1.0, np.abs(ry).max())


def test_affine_heads_use_the_raw_query_and_row_vector_orientation():
    c, b, W, _ = parts(4, 4)
    t = make_teacher(c, np.zeros_like(b), 0.5, head_weights=W)
    q = 3.0 * rand_queries(2, 6, seed=1)
    y, w = t.project(q)
    raw = np.einsum("bh,bd,hde->be", w.astype(np.float64), q.astype(np.float64), W.astype(np.float64))
    col = np.einsum("bh,hed,bd->be", w.astype(np.float64), W.astype(np.float64), q.astype(np.float64))
    assert np.abs(y - raw).max() < 1e-5
    assert np.abs(y - col).max() > 0.1  # W @ q would be another function: the orientation is tested, not assumed


def test_top_k_ties_go_to_the_lower_key_index():
    # keys 1 and 3 are identical and tie for second place; exact small integers, so the float32 logits are equal
    c = np.array([[4, 0], [2, 1], [0, 4], [2, 1], [-4, 0]], np.float32)
    q = np.array([[1, 0]], np.float32)
    t = make_teacher(c, np.eye(5, 2, dtype=np.float32) + 1, 1.0, scoring=Scoring("none", 0.0, False),
                     routing=Routing(2, False))
    _, w = t.project(q)
    assert np.flatnonzero(w[0]).tolist() == [0, 1]
    assert top_indices(np.array([[1.0, 2.0, 2.0, 0.0]], np.float32), 2).tolist() == [[1, 2]]


def test_with_routing_and_the_all_key_teacher_of_a_top_k_one():
    c, b, W, kh = parts()
    t = make_teacher(c, b, 0.5, head_weights=W, key_heads=kh)
    k3 = t.with_routing(3)
    assert k3.routing == Routing(3, True) and t.with_routing(3, False).routing == Routing(3, False)
    assert k3.with_routing(None).fingerprint() == t.fingerprint()
    assert k3.fingerprint() != t.fingerprint()
    q = rand_queries(3, 6)
    assert np.count_nonzero(k3.project(q)[1], axis=1).tolist() == [3, 3, 3]
    np.testing.assert_array_equal(k3.with_routing(None).project(q)[0], t.project(q)[0])


def test_flat_teacher_still_takes_the_flat_path_bit_for_bit(small_teacher):
    q = rand_queries(5, small_teacher.dim)
    y, w = small_teacher.project(q)
    ry, rw = project_arrays(q, small_teacher.keys, small_teacher.answers)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(w, rw)
    # the general path on the same flat teacher (routed over all keys) agrees to float32 rounding
    t = small_teacher.with_routing(small_teacher.n_keys)
    assert np.abs(t.project(q)[0] - y).max() < 1e-6
