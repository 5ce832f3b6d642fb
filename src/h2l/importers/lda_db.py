"""Import a UnifyWeaver ``lda.db`` (multi-head LDA projection), per-head matrices included.

UnifyWeaver's ``LDAProjectionDB.multi_head_search`` computes, for heads in ``cluster_id`` order,

    w = softmax(q̂ · Ĉᵀ / τ)      y = Σ_i w_i · (W_i @ q  if head i has W_path  else  a_i)      y / ‖y‖

so a head with ``W_path`` becomes an affine head with ``head_weights[i] = W_iᵀ`` (h2l applies
``q · W_h``; the raw q, as UnifyWeaver does) and bias 0, a head without it keeps W = 0 and its
answer.  UnifyWeaver normalises y, so such a teacher sets ``normalize_output``.  A db without any
W is today's flat teacher, bytes unchanged (its output is not normalised: normalising changes the
length of y, never its direction, so cosine rankings and routing weights are the same either way).
The db is opened read-only through a quoted ``file:`` URI.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path, PureWindowsPath

import numpy as np

from ..errors import InputError
from ..model.teacher import Teacher, make_teacher
from .npy_dir import read_matrix, sort_key, stack_heads

LAYOUT_FIX = "pass an lda.db written by UnifyWeaver's multi-head LDA trainer"


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
        con = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)  # as_uri quotes '#', '?', '%'...
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
                             LAYOUT_FIX)
        try:
            row = con.execute("SELECT name, temperature FROM multi_head_projections WHERE mh_projection_id = ?",
                              (mh_id,)).fetchone()
            if row is None:
                ids = [r[0] for r in con.execute("SELECT mh_projection_id FROM multi_head_projections ORDER BY 1")]
                raise InputError(f"{db} has no projection with mh_projection_id {mh_id} (available: {ids})",
                                 "pass one of the available ids with --mh-id")
            name, temperature = row
            cols = {r[1] for r in con.execute("PRAGMA table_info(cluster_heads)")}
            w_col = "W_path" if "W_path" in cols else "NULL"  # older dbs have no per-head matrices
            rows = con.execute(f"SELECT cluster_id, centroid_path, answer_emb_path, {w_col} FROM cluster_heads "
                               "WHERE mh_projection_id = ?", (mh_id,)).fetchall()
            model = _embedding_model(con, tables, mh_id)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{db}: unexpected table layout ({exc})",
                             LAYOUT_FIX) from None
    finally:
        con.close()
    if not rows:
        raise InputError(f"{db}: projection {mh_id} has no rows in cluster_heads", "train the projection first")
    heads, w_paths = [], []
    for cid, cpath, apath, wpath in sorted(rows, key=lambda r: sort_key(str(r[0]))):
        for label, p in (("centroid_path", cpath), ("answer_emb_path", apath)):
            if not isinstance(p, str) or not p:
                raise InputError(f"head {cid}: {label} is empty or not text", "store the .npy path in lda.db")
        if wpath is not None and not isinstance(wpath, str):
            raise InputError(f"head {cid}: W_path is not text", "store the W .npy path in lda.db, or NULL")
        heads.append((str(cid), resolve_head_path(db, cpath, f"head {cid} centroid"),
                      resolve_head_path(db, apath, f"head {cid} answer")))
        w_paths.append(resolve_head_path(db, wpath, f"head {cid} W") if wpath else None)
    c, a, ids = stack_heads(heads)
    name = str(name or f"mh_{mh_id}")
    if not any(w_paths):
        return make_teacher(c, a, temperature, ids, name=name, embedding_model=model)
    return _with_matrices(c, a, temperature, ids, w_paths, name, model)


def _with_matrices(c, a, temperature, ids, w_paths, name: str, model: str) -> Teacher:
    """UnifyWeaver's ``W @ q`` becomes h2l's ``q · Wᵀ``; a W head's bias is 0, an answer head's W is 0."""
    d = c.shape[1]
    weights = np.zeros((len(ids), d, d), np.float32)
    answers = a.copy()
    for i, (cid, p) in enumerate(zip(ids, w_paths, strict=True)):
        if p is not None:
            weights[i] = read_matrix(p, f"head {cid} W", d).T
            answers[i] = 0.0
    return make_teacher(c, answers, temperature, ids, name=name, embedding_model=model, head_weights=weights,
                        normalize_output=True)


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
