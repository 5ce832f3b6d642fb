"""The general teacher: flat files and fingerprints unchanged, version-2 files, validation of every new field."""

import hashlib

import numpy as np
import pytest

from h2l.errors import InputError
from h2l.importers.npz import load_npz, save_npz
from h2l.model.projection import Routing, Scoring
from h2l.model.teacher import QuerySet, Targets, make_teacher, require_flat
from h2l.writers import npz_bytes


def golden_flat(kind: str):
    """Small flat teachers from exact arrays (no RNG, no BLAS), as every h2l before format_version 2 wrote them."""
    n, d = 6, 8
    c = ((np.arange(n * d).reshape(n, d) % 7) + 1).astype(np.float32) / 8
    a = ((np.arange(n * d).reshape(n, d) % 5) - 2).astype(np.float32) / 4
    a[:, 0] += 1
    if kind == "lda":
        return make_teacher(c, a, 0.1, [str(10 + i) for i in range(n)], name="golden",
                            embedding_model="all-MiniLM-L6-v2")
    q = ((np.arange(4 * d).reshape(4, d) % 3) - 1).astype(np.float32) / 2
    q[:, 1] = 1
    return make_teacher(c, a, 0.25, [f"c{i}" for i in range(n)], name="golden_qa",
                        queries=QuerySet(q[:3], np.array([0, 2, 5]), q[3:], np.array([1])),
                        answer_texts=[f"answer {i} ünï" for i in range(n)])


# Computed on main (commit 6c377c8) before the general teacher existed: fingerprint, sha256 of the .npz bytes.
GOLDEN = {"lda": ("50d8f660b6165d8fc53b7e0d7099426286b514b79eb2950d371e71e52ec78882",
                  "e23219eaf0480ff674caaa16cd6025d174841fcc3ab25d024e546805dc3b8ef3"),
          "qa": ("f004296d0e247fac40e630c1fd2502cf5ff07543d3b03cd62f02eb3f1fe5d74a",
                 "781752a5d4bd28ddf06e5bc07993416cde806ef590666072b2454f882729af57")}


@pytest.mark.parametrize("kind", sorted(GOLDEN))
def test_flat_teacher_fingerprint_and_file_bytes_are_unchanged(tmp_path, kind):
    t = golden_flat(kind)
    p = tmp_path / "t.npz"
    save_npz(t, p)
    assert (t.fingerprint(), hashlib.sha256(p.read_bytes()).hexdigest()) == GOLDEN[kind]
    assert t.is_flat and t.head_kind == "answer" and t.n_keys == t.n_heads
    with np.load(p) as z:
        assert int(z["format_version"]) == 1


def general(seed=0, n_keys=7, n_heads=3, d=5, **over):
    rng = np.random.default_rng(seed)
    kw = dict(head_weights=rng.standard_normal((n_heads, d, d)).astype(np.float32),
              key_heads=np.array([0, 1, 2] + list(rng.integers(0, n_heads, n_keys - 3))),
              scoring=Scoring("add", 1e-8, False), routing=Routing(2, False), normalize_output=True,
              targets=Targets(rng.standard_normal((4, d)).astype(np.float32), ("t0", "t1", "t2", "t3"),
                              ("a", "b", "c", "ü")),
              queries=QuerySet(rng.standard_normal((5, d)), np.array([0, 1, 2, 2, 1]), np.zeros((0, d)),
                               np.zeros(0, np.int64)))
    kw.update(over)
    return make_teacher(rng.standard_normal((n_keys, d)), np.zeros((n_heads, d)), 0.3, ["x", "y", "z"],
                        name="gen", **kw)


def test_v2_round_trip_keeps_every_field_and_the_bytes(tmp_path):
    t = general()
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    save_npz(t, a)
    u = load_npz(a)
    save_npz(u, b)
    assert a.read_bytes() == b.read_bytes() and u.fingerprint() == t.fingerprint()
    with np.load(a) as z:
        assert int(z["format_version"]) == 2 and z["head_weights"].shape == (3, 5, 5)
    assert u.scoring == t.scoring and u.routing == t.routing and u.normalize_output
    np.testing.assert_array_equal(u.key_heads, t.key_heads)
    np.testing.assert_array_equal(u.head_weights, t.head_weights)
    assert u.targets.titles == ("a", "b", "c", "ü") and u.targets.ids == t.targets.ids
    q = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(u.project(q)[0], t.project(q)[0])
    assert u.head_kind == "affine" and u.n_keys == 7 and u.n_heads == 3 and not u.is_flat


@pytest.mark.parametrize("change", [
    dict(head_weights=None, answers=True), dict(key_heads=None, n_keys=3), dict(scoring=Scoring("none", 0, False)),
    dict(routing=Routing(3, False)), dict(routing=Routing(2, True)), dict(routing=None), dict(normalize_output=False),
    dict(targets=None)])
def test_fingerprint_covers_every_general_field(change):
    change = dict(change)
    base = general()
    if change.pop("answers", False):  # W = 0 needs non-zero answers to stay a valid teacher
        t = make_teacher(base.centroids, np.ones((3, 5)), 0.3, base.cluster_ids, key_heads=base.key_heads,
                         scoring=base.scoring, routing=base.routing, normalize_output=True, targets=base.targets)
    elif "n_keys" in change:
        t = general(**{k: v for k, v in change.items() if k != "n_keys"}, n_keys=3)
        base = general(n_keys=3)
    else:
        t = general(**change)
    assert t.fingerprint() != base.fingerprint()


def test_old_and_newer_files(tmp_path):
    t = general()
    arrays = {"format_version": np.array(1, np.int64), "centroids": t.centroids[:3], "answers": np.ones((3, 5)),
              "temperature": np.array(0.3), "key_heads": np.arange(3)}
    p = tmp_path / "v1_with_v2_key.npz"
    p.write_bytes(npz_bytes(arrays))
    with pytest.raises(InputError, match="format_version 1 but holds key_heads"):
        load_npz(p)
    arrays["format_version"] = np.array(3, np.int64)
    p.write_bytes(npz_bytes(arrays))
    with pytest.raises(InputError, match="format_version 3, newer than this h2l"):
        load_npz(p)
    del arrays["format_version"], arrays["key_heads"]  # the first files had no version key at all
    p.write_bytes(npz_bytes(arrays))
    assert load_npz(p).is_flat


C = np.eye(3, 4, dtype=np.float32) + 0.1
W = np.ones((3, 4, 4), np.float32)


@pytest.mark.parametrize("kwargs, message", [
    (dict(answers=np.vstack([np.ones((2, 4)), np.zeros((1, 4))])), "answers row 2 has zero norm"),
    (dict(answers=np.zeros((3, 4)), head_weights=np.concatenate([W[:2], np.zeros((1, 4, 4))])),
     "head 2 has W = 0 and a zero answer"),
    (dict(head_weights=W[:, :3]), r"head_weights have shape \(3, 3, 4\), expected \(3, 4, 4\)"),
    (dict(head_weights=np.where(np.eye(4) > 0, np.nan, W)), "head_weights row 0 contains NaN"),
    (dict(head_weights=np.full((3, 4, 4), 1e39)), "head_weights row 0 contains NaN or Inf"),  # float64 → inf in f4
    (dict(centroids=np.vstack([C, C[:1]]), key_heads=[0, 1, 2, 3]), "key_heads hold head 3, outside 0..2"),
    (dict(centroids=np.vstack([C, C[:1]]), key_heads=[0, 1, 1, 0]), "head 2 is routed to by no key"),
    (dict(centroids=np.vstack([C, C[:1]]), key_heads=[0.0, 1.0, 2.0, 0.0]), "expected \\(4,\\) integers"),
    (dict(centroids=np.vstack([C, C[:1]]), key_heads=[0, 1, 2]), "3 key_heads for 4 keys"),
    (dict(centroids=np.vstack([C, C[:1]])), "differ in shape"),
    (dict(routing=Routing(0)), "top_k 0 is outside 1..3"),
    (dict(routing=Routing(4)), "top_k 4 is outside 1..3"),
    (dict(routing=Routing(True)), "is not an integer"),
    (dict(scoring=Scoring("cosine")), "is not one of query_norm"),
    (dict(scoring=Scoring("add", 0.0)), "eps 0.0 must be finite and > 0"),
    (dict(centroids=np.vstack([C[:2], np.zeros((1, 4))])), "centroid row 2 has zero norm"),
    (dict(targets=Targets(np.ones((2, 3)), ("a", "b"), ("x", "y"))), r"expected \(T ≥ 1, 4\)"),
    (dict(targets=Targets(np.vstack([np.ones((1, 4)), np.zeros((1, 4))]), ("a", "b"), ("x", "y"))),
     "target embedding row 1 has zero norm"),
    (dict(targets=Targets(np.ones((2, 4)), ("a",), ("x", "y"))), "1 target ids and 2 titles"),
    (dict(normalize_output="yes"), "is not a bool"),
    (dict(queries=QuerySet(np.ones((4, 5)), np.zeros(5, np.int64), np.zeros((0, 4)), np.zeros(0))),
     r"train queries have shape \(4, 5\).*transposed"),
    (dict(queries=QuerySet(np.ones((5, 4)), np.array([0.0, 1.7, 2.0, 0.0, 1.0]), np.zeros((0, 4)), np.zeros(0))),
     "train labels have dtype float64"),
])
def test_validation_refuses(kwargs, message):
    kwargs = {"centroids": C, "answers": np.ones((3, 4), np.float32), "temperature": 0.1, **kwargs}
    with pytest.raises(InputError, match=message):
        make_teacher(**kwargs)


def test_zero_keys_are_fine_when_keys_are_not_normalised():
    c = np.vstack([C[:2], np.zeros((1, 4))])
    t = make_teacher(c, np.ones((3, 4)), 0.1, scoring=Scoring("add", 1e-8, False))
    assert np.isfinite(t.project(np.ones(4))[0]).all()


def test_require_flat_names_what_the_teacher_uses():
    require_flat(golden_flat("lda"), "stage", "fix")
    with pytest.raises(InputError, match="stage supports flat answer-head teachers only, and gen has affine heads "
                                         r"\(3 d × d matrices\), 7 keys sharing 3 heads"):
        require_flat(general(), "stage", "fix")
