"""Import UnifyWeaver's bare ``.npy`` head folders, and the per-head readers ``lda.db`` shares.

UnifyWeaver stores one vector per head and file, often float64 and sometimes
shaped (1, d).  Everything is read as data only (``allow_pickle=False``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..model.teacher import Teacher, make_teacher
from .npz import load_npy

_MH = re.compile(r"^mh_(?P<mh>\d+)_cluster_(?P<cid>.+)_(?P<kind>centroid|answer)\.npy$")
_FLAT = re.compile(r"^(?P<kind>centroid|answer_emb)_(?P<cid>.+)\.npy$")


def read_vector(path: Path, what: str) -> np.ndarray:
    """Read one head vector: float32/float64, shape (d,) or (1, d), as float32 (d,)."""
    arr = load_npy(path, what)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what}: file {path} has dtype {arr.dtype}", "store float32 or float64 vectors")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{what}: file {path} has shape {arr.shape}, expected (d,) or (1, d)",
                         "store one vector per head")
    return arr.astype(np.float32)


def read_matrix(path: Path, what: str, d: int) -> np.ndarray:
    """Read one head's (d, d) matrix (UnifyWeaver saves float32 or float64) as float32."""
    arr = load_npy(path, what)
    if arr.dtype.kind not in "fiu" or arr.shape != (d, d):
        raise InputError(f"{what}: file {path} has dtype {arr.dtype}, shape {arr.shape}, expected ({d}, {d}) floats",
                         "store one d × d matrix per head (UnifyWeaver's add_cluster_head(W=...))")
    return arr.astype(np.float32)


def sort_key(cid: str) -> tuple[int, int | str]:
    return (0, int(cid)) if cid.lstrip("-").isdigit() else (1, cid)


def stack_heads(heads: list[tuple[str, Path, Path]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    cents, answers, ids = [], [], []
    dims: set[int] = set()
    for cid, cpath, apath in heads:
        c = read_vector(cpath, f"head {cid} centroid")
        a = read_vector(apath, f"head {cid} answer")
        dims.update({c.size, a.size})
        if len(dims) > 1:
            raise InputError(f"head {cid}: vector dimensions differ ({sorted(dims)})",
                             "use embeddings from one model for every head")
        cents.append(c)
        answers.append(a)
        ids.append(cid)
    return np.stack(cents), np.stack(answers), ids


def import_npy_dir(folder: str | Path, temperature: float, mh_id: int | None = None) -> Teacher:
    """Read ``mh_{id}_cluster_{cid}_{centroid|answer}.npy`` or ``centroid_{id}.npy``/``answer_emb_{id}.npy``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"npy folder {folder} does not exist", "pass the folder holding the head .npy files")
    mh: dict[str, dict[str, dict[str, Path]]] = {}
    flat: dict[str, dict[str, Path]] = {}
    for p in sorted(folder.iterdir()):
        if m := _MH.match(p.name):
            mh.setdefault(m["mh"], {}).setdefault(m["cid"], {})[m["kind"]] = p
        elif m := _FLAT.match(p.name):
            flat.setdefault(m["cid"], {})["answer" if m["kind"] == "answer_emb" else "centroid"] = p
    if mh:
        if mh_id is None:
            if len(mh) > 1:
                raise InputError(f"{folder} holds several projections (mh ids {sorted(mh, key=int)})",
                                 "pick one with --mh-id")
            mh_id = int(next(iter(mh)))
        if str(mh_id) not in mh:
            raise InputError(f"{folder} has no files for mh id {mh_id} (found {sorted(mh, key=int)})",
                             "pass one of the found ids with --mh-id")
        groups, name = mh[str(mh_id)], f"mh_{mh_id}"
    elif flat:
        groups, name = flat, folder.name
    else:
        raise InputError(f"{folder} holds no head files",
                         "name them mh_{id}_cluster_{cid}_{centroid|answer}.npy or "
                         "centroid_{id}.npy/answer_emb_{id}.npy")
    order = sorted(groups, key=sort_key)
    names: dict[str, str] = {}
    meta = folder / "teacher.json"  # written by `h2l export --format npy`: keeps the original head order
    if meta.is_file():
        try:
            doc = json.loads(meta.read_text())
            ids = [str(i) for i in doc["cluster_ids"]]
            fids = [str(i) for i in doc.get("file_ids", ids)]  # heads numbered 1..N for non-integer ids
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(f"{meta} is not valid h2l teacher metadata", "remove it or re-export") from None
        if len(fids) == len(ids) and sorted(fids) == sorted(order):
            order = fids
            names = dict(zip(fids, ids, strict=True))
    heads = []
    for cid in order:
        g = groups[cid]
        for kind in ("centroid", "answer"):
            if kind not in g:
                raise InputError(f"head {cid} has no {kind} file in {folder}", f"add its {kind} .npy")
        heads.append((cid, g["centroid"], g["answer"]))
    c, a, ids = stack_heads(heads)
    ids = [names.get(i, i) for i in ids]
    return make_teacher(c, a, temperature, ids, name=name)
