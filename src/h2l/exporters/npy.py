"""The teacher in the .npy layouts UnifyWeaver's own Go and Rust runtimes read.

Both layouts, side by side in one folder: ``centroid_{id}.npy`` +
``answer_emb_{id}.npy`` and ``mh_{mh}_cluster_{id}_{centroid|answer}.npy``.
Each file is little-endian float32 of shape (d,): their Go reader assumes
``<f4`` and would read float64 as garbage.  Centroids are written as given
(not normalised), answers as given; τ goes to ``teacher.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..atomic import check_output_dir, npy_bytes, staged_dir, write_file
from ..errors import InputError
from ..model.teacher import Teacher

_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")


def export_npy(teacher: Teacher, out: str | Path, *, mh_id: int = 1, force: bool = False) -> list[str]:
    """Write both layouts plus teacher.json; returns the relative paths written."""
    check_output_dir(Path(out), force)
    bad = [cid for cid in teacher.cluster_ids if not _SAFE_ID.fullmatch(cid) or cid in (".", "..")]
    if bad:
        raise InputError(f"cluster id {bad[0]!r} cannot be used in a file name",
                         "use ids of letters, digits, '_', '-' and '.'")
    written = []
    with staged_dir(Path(out), force) as stage:
        for cid, c, a in zip(teacher.cluster_ids, teacher.centroids, teacher.answers):
            for rel, vec in ((f"centroid_{cid}.npy", c), (f"answer_emb_{cid}.npy", a),
                             (f"mh_{mh_id}_cluster_{cid}_centroid.npy", c),
                             (f"mh_{mh_id}_cluster_{cid}_answer.npy", a)):
                write_file(stage, rel, npy_bytes(np.asarray(vec, np.float32)))
                written.append(rel)
        meta = {"name": teacher.name, "temperature": teacher.temperature, "mh_id": mh_id,
                "cluster_ids": list(teacher.cluster_ids), "dim": teacher.dim, "dtype": "<f4"}
        write_file(stage, "teacher.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        written.append("teacher.json")
    return written
