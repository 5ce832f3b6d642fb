"""Import a UnifyWeaver federated Procrustes model (``train_pearltrees_federated.py``) as an affine teacher.

Layout (UnifyWeaver's ``docs/design/FEDERATED_MODEL_FORMAT.md``): ``MODEL.pkl`` is a pickled dict
(``cluster_ids``, ``cluster_centroids`` (N, d) unnormalised, ``temperature``, ``global_target_ids``,
``global_target_titles``, ``cluster_dir``); the cluster folder holds ``<cluster_id>.npz``
(``W_stack`` (1, d, d), applied as ``q @ W``) and ``routing_data.npz`` (``query_embeddings``,
``target_embeddings``, ``idx_to_cluster_keys``/``_values``).  Two of UnifyWeaver's projections:

* centroid routing, ``FederatedProjectionWrapper.project``: w = softmax((q / (‖q‖ + 1e-8)) · Cᵀ / τ),
  y = Σ_{i ∈ top-k} w_i (q @ W_i) / Σ_{i ∈ top-k} w_i  (all clusters when top_k is None);
* query routing, ``infer_pearltrees_federated.py`` ``_project_weighted``: w = softmax(q · Qᵀ / τ) over the
  training queries, y = Σ_{j ∈ top-k} w_j (q @ W_{cluster(j)}), not renormalised.

Where UnifyWeaver silently skips a missing cluster file or an unmapped query (and so computes
another function), h2l refuses the model.  float64 W (UnifyWeaver's singleton clusters) are cast
to float32.  The pickle is read by :mod:`h2l.importers.safe_pickle`, never executed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PureWindowsPath

import numpy as np

from ..errors import InputError
from ..model.teacher import QuerySet, Routing, Scoring, Targets, Teacher, make_teacher
from .safe_pickle import load_pickle

ROUTINGS = ("centroid", "query")
ROUTING_FILE = "routing_data.npz"
#: FederatedProjectionWrapper's query normalisation: q / (‖q‖ + 1e-8)
WRAPPER_EPS = 1e-8
RETRAIN = "re-create the model with UnifyWeaver's train_pearltrees_federated.py"


def find_cluster_dir(pkl: Path, stored, first_cluster: str) -> Path:
    """The cluster folder: as stored (UnifyWeaver resolves it against the process's working folder),
    relative to the pickle's folder, then ``<pickle stem>/`` and ``<stored name>/`` beside the pickle.

    A candidate counts when it holds routing_data.npz or the first cluster's file; the error lists all tried.
    """
    tried: list[Path] = []
    if isinstance(stored, str) and stored:
        raw = Path(stored)
        tried.append(raw)
        if not raw.is_absolute():
            tried.append(pkl.parent / raw)
    tried.append(pkl.with_suffix(""))
    if isinstance(stored, str) and stored:
        tried.append(pkl.parent / PureWindowsPath(stored).name)  # a copied model: its folder beside it
    seen: list[Path] = []
    for p in tried:
        if p in seen:
            continue
        seen.append(p)
        if p.is_dir() and ((p / ROUTING_FILE).is_file() or (p / f"{first_cluster}.npz").is_file()):
            return p
    raise InputError(f"cluster folder of {pkl} not found; tried " + ", ".join(str(p) for p in seen),
                     f"put the cluster .npz files and {ROUTING_FILE} in {pkl.with_suffix('')} (beside the .pkl)")


def _npz(path: Path, keys: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise InputError(f"{what} {path} lacks {', '.join(missing)}", RETRAIN)
            return {k: z[k] for k in keys}
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist", "restore it from the trained model's folder") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{what} {path} is not a readable .npz ({type(exc).__name__})", RETRAIN) from None


def _meta(pkl: Path) -> dict:
    meta = load_pickle(pkl, "federated model")
    if not isinstance(meta, dict) or "cluster_ids" not in meta:
        raise InputError(f"federated model {pkl} is not a dict with cluster_ids", RETRAIN)
    ids = meta["cluster_ids"]
    if not isinstance(ids, (list, tuple)) or not ids or not all(isinstance(c, str) for c in ids):
        raise InputError(f"federated model {pkl}: cluster_ids is not a non-empty list of str", RETRAIN)
    return meta


def _cluster_weights(folder: Path, ids: list[str], d: int) -> np.ndarray:
    """(N, d, d) float32: each cluster's W_stack[0], as UnifyWeaver reads it."""
    missing = [c for c in ids if not (folder / f"{c}.npz").is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(ids)} cluster files are missing from {folder} (e.g. "
                         + ", ".join(f"{c}.npz" for c in missing[:3]) + "); UnifyWeaver would skip them silently",
                         "restore the missing files (h2l refuses rather than compute another function)")
    out = np.empty((len(ids), d, d), np.float32)
    for i, cid in enumerate(ids):
        w = _npz(folder / f"{cid}.npz", ("W_stack",), f"cluster {cid}")["W_stack"]
        if w.dtype.kind not in "fiu" or w.ndim != 3 or w.shape[0] < 1 or w.shape[1:] != (d, d):
            raise InputError(f"cluster {cid}: W_stack has dtype {w.dtype}, shape {w.shape}, expected (1, {d}, {d})",
                             RETRAIN)
        out[i] = w[0]  # float64 (singleton clusters) → float32
    return out


def _key_heads(rd: dict[str, np.ndarray], ids: list[str], n_queries: int) -> np.ndarray:
    """Head index of each training query (routing_data's idx_to_cluster, which is grouped, not in order)."""
    keys, values = rd["idx_to_cluster_keys"], rd["idx_to_cluster_values"]
    if keys.dtype.kind not in "iu" or keys.ndim != 1 or values.shape != keys.shape \
            or not np.array_equal(np.sort(keys), np.arange(n_queries)):
        raise InputError(f"{ROUTING_FILE}: idx_to_cluster_keys is not a permutation of 0..{n_queries - 1} "
                         "(UnifyWeaver would skip the unmapped queries)", RETRAIN)
    pos = {c: i for i, c in enumerate(ids)}
    unknown = sorted({str(v) for v in values} - set(pos))
    if unknown:
        raise InputError(f"{ROUTING_FILE} maps queries to cluster(s) {', '.join(unknown[:3])} not in the model",
                         RETRAIN)
    heads = np.empty(n_queries, np.int64)
    heads[keys] = [pos[str(v)] for v in values]
    return heads


def _texts(meta: dict, key: str, n: int, pkl: Path) -> tuple[str, ...]:
    vals = meta.get(key)
    if not isinstance(vals, (list, tuple)) or len(vals) != n:
        raise InputError(f"federated model {pkl}: {key} is not a list of {n} entries (one per target)", RETRAIN)
    return tuple("" if v is None else str(v) for v in vals)


def import_federated(pkl: str | Path, routing: str = "centroid", top_k: int | None = None) -> Teacher:
    """Read a federated model as an affine teacher with UnifyWeaver's scoring for ``routing``.

    ``routing="centroid", top_k=10`` is FederatedProjectionWrapper.project; ``routing="query",
    top_k=10`` is infer_pearltrees_federated's _project_weighted; ``top_k=None`` routes over all keys.
    """
    pkl = Path(pkl)
    if routing not in ROUTINGS:
        raise InputError(f"unknown routing {routing!r}", "pass --routing centroid or --routing query")
    meta = _meta(pkl)
    ids = list(meta["cluster_ids"])
    folder = find_cluster_dir(pkl, meta.get("cluster_dir"), ids[0])
    rd = _npz(folder / ROUTING_FILE, ("query_embeddings", "target_embeddings", "idx_to_cluster_keys",
                                      "idx_to_cluster_values"), "routing data")
    queries = rd["query_embeddings"]
    if queries.ndim != 2 or queries.shape[0] == 0:
        raise InputError(f"{ROUTING_FILE}: query_embeddings have shape {queries.shape}, expected (n, d)", RETRAIN)
    d = int(queries.shape[1])
    heads = _key_heads(rd, ids, len(queries))
    n_t = len(rd["target_embeddings"])
    targets = Targets(rd["target_embeddings"], _texts(meta, "global_target_ids", n_t, pkl),
                      _texts(meta, "global_target_titles", n_t, pkl))
    weights = _cluster_weights(folder, ids, d)
    stored = QuerySet(queries, heads, np.zeros((0, d), np.float32), np.zeros(0, np.int64))
    if routing == "centroid":
        keys = meta.get("cluster_centroids")
        if not isinstance(keys, np.ndarray):
            raise InputError(f"federated model {pkl} has no cluster_centroids array", "use --routing query")
        key_heads, scoring = None, Scoring("add", WRAPPER_EPS, normalize_keys=False)
        route = Routing(top_k, renormalize=True)
    else:
        keys, key_heads = queries, heads
        scoring, route = Scoring("none", 0.0, normalize_keys=False), Routing(top_k, renormalize=False)
    return make_teacher(keys, np.zeros((len(ids), d), np.float32), meta.get("temperature", 0.1), ids,
                        name=pkl.stem, queries=stored, head_weights=weights, key_heads=key_heads, scoring=scoring,
                        routing=route, targets=targets)
