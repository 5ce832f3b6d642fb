"""Import UnifyWeaver teachers: the SQLite ``lda.db`` and bare ``.npy`` folders.

UnifyWeaver stores one vector per head and file, often float64 and sometimes
shaped (1, d).  Everything here is read as data only: sqlite opened
read-only, ``.npy`` loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path, PureWindowsPath

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


def _sort_key(cid: str) -> tuple[int, int | str]:
    return (0, int(cid)) if cid.lstrip("-").isdigit() else (1, cid)


def _stack(heads: list[tuple[str, Path, Path]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
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


def resolve_head_path(db: Path, stored: str, what: str) -> Path:
    """Find a head file the way UnifyWeaver's db can name it; the error lists every place tried.

    ``LDAProjectionDB("some/dir/lda.db")`` stores ``some/dir/embeddings/...`` relative to the trainer's
    working directory, and a db copied to another machine keeps stale absolute paths.  Tried in order:
    the stored path (as the trainer saw it, from here); the stored path relative to the db's folder; then
    ``<db folder>/embeddings/<file name>``, UnifyWeaver's default layout.
    """
    base = db.resolve().parent
    raw = Path(stored)
    tried = [raw]
    if not raw.is_absolute():
        tried.append(base / raw)
    tried.append(base / "embeddings" / PureWindowsPath(stored).name)  # splits on / and \ (a db from Windows)
    seen: list[Path] = []
    for p in tried:
        if p not in seen:
            seen.append(p)
            if p.is_file():
                return p
    raise InputError(f"{what}: file {stored} does not exist; tried " + ", ".join(str(p) for p in seen),
                     f"copy the head .npy files to {base / 'embeddings'} (UnifyWeaver's layout) or fix the paths "
                     "in lda.db")


def import_lda_db(db: str | Path, mh_id: int = 1) -> Teacher:
    """Read projection ``mh_id`` from an ``lda.db``; head paths resolve as :func:`resolve_head_path` says."""
    db = Path(db)
    if not db.is_file():
        raise InputError(f"lda.db {db} does not exist", "pass the path of UnifyWeaver's lda.db")
    try:
        con = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:  # pragma: no cover - connect is lazy in practice
        raise InputError(f"cannot open {db} ({exc})", "check the file is an SQLite database") from None
    try:
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError:
            raise InputError(f"{db} is not an SQLite database", "pass UnifyWeaver's lda.db") from None
        missing = sorted({"multi_head_projections", "cluster_heads"} - tables)
        if missing:
            raise InputError(f"{db} lacks table(s) {', '.join(missing)}",
                             "pass an lda.db written by UnifyWeaver's multi-head LDA trainer")
        try:
            row = con.execute("SELECT name, temperature FROM multi_head_projections WHERE mh_projection_id = ?",
                              (mh_id,)).fetchone()
            if row is None:
                ids = [r[0] for r in con.execute("SELECT mh_projection_id FROM multi_head_projections ORDER BY 1")]
                raise InputError(f"{db} has no projection with mh_projection_id {mh_id} (available: {ids})",
                                 "pass one of the available ids with --mh-id")
            name, temperature = row
            rows = con.execute("SELECT cluster_id, centroid_path, answer_emb_path FROM cluster_heads "
                               "WHERE mh_projection_id = ?", (mh_id,)).fetchall()
            model = _embedding_model(con, tables, mh_id)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{db}: unexpected table layout ({exc})",
                             "pass an lda.db written by UnifyWeaver's multi-head LDA trainer") from None
    finally:
        con.close()
    if not rows:
        raise InputError(f"{db}: projection {mh_id} has no rows in cluster_heads", "train the projection first")
    heads = []
    for cid, cpath, apath in sorted(rows, key=lambda r: _sort_key(str(r[0]))):
        for label, p in (("centroid_path", cpath), ("answer_emb_path", apath)):
            if not isinstance(p, str) or not p:
                raise InputError(f"head {cid}: {label} is empty or not text", "store the .npy path in lda.db")
        heads.append((str(cid), resolve_head_path(db, cpath, f"head {cid} centroid"),
                      resolve_head_path(db, apath, f"head {cid} answer")))
    c, a, ids = _stack(heads)
    return make_teacher(c, a, temperature, ids, name=str(name or f"mh_{mh_id}"), embedding_model=model)


def _embedding_model(con: sqlite3.Connection, tables: set[str], mh_id: int) -> str:
    """The projection's embedding model name (embedding_models.name via multi_head_projections.model_id).

    Older or hand-made dbs without that table or column give "" (unknown), which export
    --with-encoder then refuses rather than guessing.
    """
    if "embedding_models" not in tables:
        return ""
    cols = {r[1] for r in con.execute("PRAGMA table_info(multi_head_projections)")}
    if "model_id" not in cols:
        return ""
    row = con.execute("SELECT e.name FROM multi_head_projections p JOIN embedding_models e "
                      "ON e.model_id = p.model_id WHERE p.mh_projection_id = ?", (mh_id,)).fetchone()
    return str(row[0]) if row and row[0] is not None else ""


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
    order = sorted(groups, key=_sort_key)
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
    c, a, ids = _stack(heads)
    ids = [names.get(i, i) for i in ids]
    return make_teacher(c, a, temperature, ids, name=name)
