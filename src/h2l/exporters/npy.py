"""The teacher in the .npy layouts UnifyWeaver's own Go and Rust runtimes read.

Both layouts, side by side in one folder: ``centroid_{id}.npy`` +
``answer_emb_{id}.npy`` and ``mh_{mh}_cluster_{id}_{centroid|answer}.npy``.
Each file is little-endian float32 of shape (d,): their Go reader assumes
``<f4`` and would read float64 as garbage.  Centroids are written as given
(not normalised), answers as given; τ goes to ``teacher.json``.

UnifyWeaver's loaders take integer ids only: Go globs ``centroid_*.npy`` and
keeps names that scan as ``centroid_%d.npy``; Rust probes
``mh_{mh}_cluster_{i}_centroid.npy`` for integer i.  A teacher whose ids are
not all plain integers (every teacher built from Q-A text) is written with
heads numbered 1..N in file order, and ``cluster_ids.json`` beside them maps
each number to its cluster id (``teacher.json`` records the same under
``file_ids``, which ``h2l teacher import --npy-dir`` reads back).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..atomic import check_output_dir, staged_dir, write_file
from ..model.teacher import Teacher, require_flat
from ..writers import npy_bytes

_INT_ID = re.compile(r"0|[1-9][0-9]*")


def file_ids(cluster_ids: tuple[str, ...] | list[str]) -> list[str]:
    """The ids used in file names: the cluster ids when all are plain non-negative integers, else "1".."N"."""
    if all(_INT_ID.fullmatch(c) for c in cluster_ids):
        return list(cluster_ids)
    return [str(i) for i in range(1, len(cluster_ids) + 1)]


def export_npy(teacher: Teacher, out: str | Path, *, mh_id: int = 1, force: bool = False) -> list[str]:
    """Write both layouts plus teacher.json; returns the relative paths written."""
    require_flat(teacher, "h2l export --format npy", "the npy layouts hold one centroid and one answer per head: "
                 "export a flat teacher")
    check_output_dir(Path(out), force)
    fids = file_ids(teacher.cluster_ids)
    numbered = fids != list(teacher.cluster_ids)
    written = []
    with staged_dir(Path(out), force) as stage:
        for cid, c, a in zip(fids, teacher.centroids, teacher.answers, strict=True):
            for rel, vec in ((f"centroid_{cid}.npy", c), (f"answer_emb_{cid}.npy", a),
                             (f"mh_{mh_id}_cluster_{cid}_centroid.npy", c),
                             (f"mh_{mh_id}_cluster_{cid}_answer.npy", a)):
                write_file(stage, rel, npy_bytes(np.asarray(vec, np.float32)))
                written.append(rel)
        meta = {"name": teacher.name, "temperature": teacher.temperature, "mh_id": mh_id,
                "cluster_ids": list(teacher.cluster_ids), "dim": teacher.dim, "dtype": "<f4"}
        if numbered:
            meta["file_ids"] = fids
            mapping = dict(zip(fids, teacher.cluster_ids, strict=True))
            write_file(stage, "cluster_ids.json", (json.dumps(mapping, indent=2) + "\n").encode())
            written.append("cluster_ids.json")
        write_file(stage, "teacher.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        written.append("teacher.json")
    return written
