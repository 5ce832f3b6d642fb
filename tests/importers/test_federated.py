"""UnifyWeaver federated Procrustes models: projections vs UnifyWeaver's formulas, folder rules, hostile pickles."""

import json
import os
import pickle

import numpy as np
import pytest

from conftest import PEARLTREES, one_line_error, rand_queries
from h2l.errors import InputError
from h2l.importers.federated import import_federated
from h2l.importers.npz import load_npz

K50 = PEARLTREES / "federated_k50.pkl"


class _DataOnly(pickle.Unpickler):
    """The test's own restricted reader (independent of h2l's): numpy arrays and nothing else."""

    def find_class(self, module, name):
        if module.startswith("numpy") and name in ("_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


@pytest.fixture(scope="module")
def k50():
    """The shared model as UnifyWeaver's loaders read it, in float64."""
    if not K50.is_file():
        pytest.skip(f"pearltrees federated_k50 model not found at {K50} (set H2L_SHARED_ROOT)")
    with open(K50, "rb") as f:
        meta = _DataOnly(f).load()
    folder = PEARLTREES / "federated_k50"
    rd = np.load(folder / "routing_data.npz")
    Ws = np.stack([np.load(folder / f"{c}.npz")["W_stack"][0].astype(np.float64) for c in meta["cluster_ids"]])
    i2c = {int(k): str(v) for k, v in zip(rd["idx_to_cluster_keys"], rd["idx_to_cluster_values"], strict=True)}
    pos = {c: i for i, c in enumerate(meta["cluster_ids"])}
    rng = np.random.default_rng(0)
    tg, qe = rd["target_embeddings"], rd["query_embeddings"]
    mixed = qe[rng.choice(len(qe), 60)] + 0.5 * qe[rng.choice(len(qe), 60)] + 0.2 * rng.standard_normal((60, 384))
    q = np.vstack([tg[rng.choice(len(tg), 60, replace=False)], mixed / np.linalg.norm(mixed, axis=1, keepdims=True)])
    q = q.astype(np.float32)
    q[-1] *= 0.5  # a query that is not unit-norm
    return dict(meta=meta, C=meta["cluster_centroids"].astype(np.float64), T=meta["temperature"], Ws=Ws,
                Q=qe.astype(np.float64), cluster_of=np.array([pos[i2c[j]] for j in range(len(qe))]), q=q, rd=rd)


def wrapper_project(m, q, k):
    """FederatedProjectionWrapper.project (distill_federated_to_transformer.py L148–214)."""
    q = q.astype(np.float64)
    sims = (q / (np.linalg.norm(q) + 1e-8)) @ m["C"].T
    w = np.exp((sims - sims.max()) / m["T"])
    w /= w.sum()
    top = np.argsort(w)[-k:]
    return sum(w[i] * (q @ m["Ws"][i]) for i in top) / w[top].sum()


def project_weighted(m, q, k):
    """infer_pearltrees_federated.py project_query + _project_weighted (L256–295); returns (y, the k-th gap)."""
    q = q.astype(np.float64)
    sims = q @ m["Q"].T
    w = np.exp((sims - sims.max()) / m["T"])
    w /= w.sum()
    top = np.argsort(w)[-k:]
    s = np.sort(w)[::-1]
    return sum(w[j] * (q @ m["Ws"][m["cluster_of"][j]]) for j in top), (s[k - 1] - s[k]) / s[k - 1]


@pytest.mark.parametrize("k", [None, 10])
def test_centroid_routing_reproduces_the_wrapper(k50, k):
    t = import_federated(K50, "centroid", k)
    assert (t.n_keys, t.n_heads, t.dim, t.head_kind) == (50, 50, 384, "affine")
    got, w = t.project(k50["q"])
    ref = np.stack([wrapper_project(k50, x, k or 50) for x in k50["q"]])
    assert np.abs(got - ref).max() < 1e-5
    assert np.count_nonzero(w, axis=1).max() == (k or 50)


def test_query_routing_reproduces_project_weighted(k50):
    """Top-10 of 1174 training queries, not renormalised.  The training queries hold exact duplicates, so some
    queries tie at the 10th weight: UnifyWeaver's unstable argsort picks either; h2l takes the lower index
    (as ONNX TopK).  Rows without a tie must match exactly; tied rows must be a valid top-10 computed right."""
    t = import_federated(K50, "query", 10)
    assert (t.n_keys, t.n_heads, t.routing.top_k, t.routing.renormalize) == (1174, 50, 10, False)
    got, w = t.project(k50["q"])
    refs = [project_weighted(k50, x, 10) for x in k50["q"]]
    ref, gap = np.stack([r[0] for r in refs]), np.array([r[1] for r in refs])
    clear = gap > 1e-6
    assert clear.sum() >= 100, "almost every row has a clear 10th weight"
    assert np.abs(got[clear] - ref[clear]).max() < 1e-5
    for i in np.flatnonzero(~clear):  # tied rows: h2l's choice is among the 10 largest, and its sum is right
        x = k50["q"][i].astype(np.float64)
        sims = x @ k50["Q"].T
        full = np.exp((sims - sims.max()) / k50["T"])
        full /= full.sum()
        chosen = np.flatnonzero(w[i])
        assert len(chosen) == 10 and full[chosen].min() >= np.sort(full)[-10] * (1 - 1e-5)
        y = sum(full[j] * (x @ k50["Ws"][k50["cluster_of"][j]]) for j in chosen)
        assert np.abs(got[i] - y).max() < 1e-5


def test_targets_and_training_queries_are_carried(k50):
    t = import_federated(K50)
    assert t.targets.ids == tuple(k50["meta"]["global_target_ids"])
    assert t.targets.titles == tuple(k50["meta"]["global_target_titles"])
    np.testing.assert_array_equal(t.targets.embeddings, k50["rd"]["target_embeddings"])
    np.testing.assert_array_equal(t.queries.train, k50["rd"]["query_embeddings"])
    np.testing.assert_array_equal(t.queries.train_labels, k50["cluster_of"])
    assert t.scoring.query_norm == "add" and t.scoring.eps == 1e-8 and not t.scoring.normalize_keys


def test_cli_import_federated_round_trip(k50, tmp_path, runner):
    from h2l.cli import app

    out = tmp_path / "k50.npz"
    r = runner.invoke(app, ["teacher", "import", "--federated", str(K50), "--routing", "query", "--top-k", "10",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = load_npz(out)
    assert t.routing.top_k == 10 and not t.routing.renormalize and t.key_heads is not None
    np.testing.assert_array_equal(t.project(k50["q"][:4])[0], import_federated(K50, "query", 10).project(
        k50["q"][:4])[0])
    r = runner.invoke(app, ["teacher", "info", str(out), "--json"])
    info = json.loads(r.stdout)
    assert (info["n_keys"], info["n_heads"], info["targets"], info["w_bytes"]) == (1174, 50, 1174, 50 * 384 * 384 * 4)
    assert info["key_routing"] == {"top_k": 10, "renormalize": False} and info["scoring"]["query_norm"] == "none"


# ------------------------------------------------------------------ small models in UnifyWeaver's layout

def write_federated(root, name="m", d=6, n=3, per=4, seed=0, cluster_dir=None, float64_first=True):
    """What train_pearltrees_federated.py writes: MODEL.pkl (a dict) and <cluster_dir>/<cid>.npz + routing_data."""
    rng = np.random.default_rng(seed)
    ids = [f"cluster_{i}" for i in range(n)]
    folder = root / (cluster_dir or name)
    folder.mkdir(parents=True, exist_ok=True)
    Q = rng.standard_normal((n * per, d)).astype(np.float32)
    A = rng.standard_normal((n * per, d)).astype(np.float32)
    labels = np.repeat(np.arange(n), per)
    for i, cid in enumerate(ids):
        W = rng.standard_normal((d, d))
        W = W if float64_first and i == 0 else W.astype(np.float32)  # singleton clusters' W is float64
        np.savez_compressed(folder / f"{cid}.npz", W_stack=W[None], centroids=Q[labels == i].mean(0)[None],
                            target_embeddings=A[labels == i], indices=np.flatnonzero(labels == i))
    order = np.argsort(labels % 2, kind="stable")  # keys grouped, not 0..n-1 in order, as the trainer stores them
    np.savez(folder / "routing_data.npz", query_embeddings=Q, target_embeddings=A, idx_to_cluster_keys=order,
             idx_to_cluster_values=np.array([ids[labels[j]] for j in order]))
    meta = {"cluster_ids": ids, "cluster_centroids": np.stack([Q[labels == i].mean(0) for i in range(n)]),
            "temperature": 0.1, "global_target_ids": [str(i) for i in range(n * per)],
            "global_target_titles": [f"title {i}" for i in range(n * per)], "metrics": {}, "num_clusters": n,
            "cluster_dir": str(cluster_dir or name), "data_path": "/elsewhere/train.jsonl"}
    pkl = root / f"{name}.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(meta, f)
    return pkl, folder


def test_cluster_folder_is_found_from_another_working_folder(tmp_path, monkeypatch):
    pkl, folder = write_federated(tmp_path / "models")
    monkeypatch.chdir(tmp_path)  # the stored "m" is relative to the trainer's folder, not to here
    t = import_federated(pkl)
    assert t.n_heads == 3 and t.head_weights.dtype == np.float32
    np.testing.assert_allclose(t.head_weights[0], np.load(folder / "cluster_0.npz")["W_stack"][0], rtol=1e-6)


def test_stored_folder_is_tried_first_then_beside_the_pickle(tmp_path, monkeypatch):
    pkl, _ = write_federated(tmp_path / "a", cluster_dir="clusters_v1", seed=1)
    write_federated(tmp_path / "cwd", name="clusters_v1", seed=2)  # what the stored path means from the cwd
    monkeypatch.chdir(tmp_path / "cwd")
    from_cwd = import_federated(pkl)
    monkeypatch.chdir(tmp_path)
    beside = import_federated(pkl)
    assert not np.array_equal(from_cwd.head_weights, beside.head_weights)  # the cwd copy won, as in UnifyWeaver


def test_stale_stored_folder_falls_back_to_the_pickle_stem(tmp_path):
    pkl, folder = write_federated(tmp_path)
    meta = _DataOnly(open(pkl, "rb")).load()
    meta["cluster_dir"] = "/trainer/machine/output/m"
    pickle.dump(meta, open(pkl, "wb"))
    assert import_federated(pkl).n_heads == 3
    folder.rename(tmp_path / "gone")
    with pytest.raises(InputError, match="cluster folder of .* not found; tried /trainer/machine/output/m, "
                                         f"{tmp_path / 'm'}"):
        import_federated(pkl)


def test_missing_cluster_file_is_refused_not_skipped(tmp_path, runner):
    from h2l.cli import app

    pkl, folder = write_federated(tmp_path)
    (folder / "cluster_1.npz").unlink()
    r = runner.invoke(app, ["teacher", "import", "--federated", str(pkl), "--out", str(tmp_path / "t.npz")])
    one_line_error(r, 3, "1 of 3 cluster files are missing", "cluster_1.npz", "UnifyWeaver would skip them")
    assert not (tmp_path / "t.npz").exists()


def test_top_k_and_routing_flags(tmp_path, runner):
    from h2l.cli import app

    pkl, _ = write_federated(tmp_path)
    out = str(tmp_path / "t.npz")
    one_line_error(runner.invoke(app, ["teacher", "import", "--federated", str(pkl), "--top-k", "4", "--out", out]),
                   3, "top_k 4 is outside 1..3")
    one_line_error(runner.invoke(app, ["teacher", "import", "--federated", str(pkl), "--top-k", "0", "--out", out]),
                   3, "top_k 0 is outside 1..3")
    db = tmp_path / "x.db"
    one_line_error(runner.invoke(app, ["teacher", "import", "--lda-db", str(db), "--routing", "query", "--out", out]),
                   2, "--routing and --top-k apply to --federated only")
    one_line_error(runner.invoke(app, ["teacher", "import", "--lda-db", str(db), "--federated", str(pkl),
                                       "--out", out]), 2, "exactly one of --lda-db, --npy-dir or --federated")
    r = runner.invoke(app, ["teacher", "import", "--federated", str(pkl), "--routing", "query", "--out", out])
    assert r.exit_code == 0, r.output
    t = load_npz(out)
    assert t.n_keys == 12 and t.routing.top_k is None and t.scoring.query_norm == "none"
    q = rand_queries(3, 6)
    y, w = t.project(q)
    assert np.allclose(w.sum(1), 1, atol=1e-6)


class Evil:
    """Unpickling this runs a shell command (it is never called by these tests; the unpickler must refuse it)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class EvilEval:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (eval, (f"open({self.path!r}, 'w').close()",))


@pytest.mark.parametrize("make, called", [(lambda m: Evil(f"touch {m}"), "system"),
                                          (lambda m: EvilEval(str(m)), "builtins.eval")])
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, runner, make, called):
    from h2l.cli import app

    pkl, _ = write_federated(tmp_path)
    marker = tmp_path / "ran"
    meta = _DataOnly(open(pkl, "rb")).load()
    meta["metrics"] = {"hook": make(marker)}  # hidden inside an otherwise genuine model
    pkl.write_bytes(pickle.dumps(meta))
    r = runner.invoke(app, ["teacher", "import", "--federated", str(pkl), "--out", str(tmp_path / "t.npz")])
    err = one_line_error(r, 3, "refused, not run", called)
    assert not marker.exists(), err
    assert not (tmp_path / "t.npz").exists()


def test_other_bad_pickles(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps({"cluster_ids": ["a"], "x": np.array([object()], dtype=object)}))
    with pytest.raises(InputError, match="refused, not run"):  # object arrays reconstruct through builtins.object
        import_federated(p)
    p.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(InputError, match="is not a dict with cluster_ids"):
        import_federated(p)
    p.write_bytes(pickle.dumps({"cluster_ids": ["a"]})[:-5])
    with pytest.raises(InputError, match="is not a readable pickle"):
        import_federated(p)


def test_load_teacher_reads_a_federated_pickle(tmp_path):
    import h2l

    pkl, _ = write_federated(tmp_path)
    t = h2l.load_teacher(pkl, routing="query", top_k=2)
    assert (t.n_keys, t.n_heads, t.routing.top_k, t.routing.renormalize) == (12, 3, 2, False)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_data_pickles_of_every_protocol_load(tmp_path, protocol):
    """numpy pickles arrays differently per protocol (_codecs.encode at 2, _frombuffer at 5): all are data."""
    from h2l.importers.safe_pickle import load_pickle

    value = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(3.5), "u": np.array(["ab", "c"]),
             "l": [1, "x", 2.5, None, (1, 2)]}
    p = tmp_path / "p.pkl"
    p.write_bytes(pickle.dumps(value, protocol=protocol))
    got = load_pickle(p)
    np.testing.assert_array_equal(got["a"], value["a"])
    assert got["s"] == 3.5 and got["u"].tolist() == ["ab", "c"] and got["l"] == value["l"]
