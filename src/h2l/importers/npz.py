"""Teacher files: the documented .npz format (fixed zip timestamps, never unpickled) and plain .npy reads."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic
from ..errors import InputError
from ..model.teacher import QuerySet, Teacher, make_teacher
from ..writers import npz_bytes

NPZ_FORMAT_VERSION = 1


def load_npy(path: str | Path, what: str) -> np.ndarray:
    """Read a plain .npy as data only (never unpickled); every problem is an InputError naming ``what``."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{what}: file {path} does not exist", "fix the path or restore the file") from None
    except IsADirectoryError:
        raise InputError(f"{what}: {path} is a folder, not a .npy file", "point it at a .npy file") from None
    except (ValueError, OSError, EOFError) as exc:
        pickled = "pickle" in str(exc).lower() and path.read_bytes()[:6] == b"\x93NUMPY"
        reason = "holds a pickled object (refused, not executed)" if pickled else "is not a readable .npy"
        raise InputError(f"{what}: file {path} {reason}", "re-save it with numpy.save as float32") from None
    if not isinstance(arr, np.ndarray):  # np.load opens an .npz as an NpzFile
        arr.close()
        raise InputError(f"{what}: file {path} is an .npz archive, not a .npy", "save one array with numpy.save")
    return arr


def save_npz(teacher: Teacher, path: str | Path) -> None:
    """Write a teacher .npz with fixed zip timestamps, so equal teachers give equal bytes.

    Keys: centroids (N,d) f4, answers (N,d) f4, temperature () f8, cluster_ids (N,) str,
    name () str, embedding_model () str, format_version () i8, when queries are stored
    train_queries, train_labels, heldout_queries, heldout_labels, and for Q-A teachers
    answer_texts (N,) str (each head's answer text, in head order).
    """
    arrays = {
        "format_version": np.array(NPZ_FORMAT_VERSION, np.int64),
        "centroids": teacher.centroids,
        "answers": teacher.answers,
        "temperature": np.array(teacher.temperature, np.float64),
        "cluster_ids": np.array(teacher.cluster_ids, dtype=str),
        "name": np.array(teacher.name, dtype=str),
        "embedding_model": np.array(teacher.embedding_model, dtype=str),
    }
    if teacher.queries is not None:
        qs = teacher.queries
        arrays.update(train_queries=qs.train, train_labels=qs.train_labels,
                      heldout_queries=qs.heldout, heldout_labels=qs.heldout_labels)
    if teacher.answer_texts is not None:
        arrays["answer_texts"] = np.array(teacher.answer_texts, dtype=str)
    write_bytes_atomic(Path(path), npz_bytes(arrays))


def load_npz(path: str | Path) -> Teacher:
    """Read a teacher .npz without unpickling anything; every problem is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"teacher file {path} does not exist", "pass the path of a teacher .npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() and path.read_bytes()[:4] == b"PK\x03\x04":
            raise InputError(f"teacher file {path} holds a pickled object, refused (not executed)",
                             "save plain numeric arrays (h2l never unpickles teacher files)") from None
        raise InputError(f"teacher file {path} is not a readable .npz ({exc})", "re-create it") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"teacher file {path} is not a readable .npz ({type(exc).__name__})",
                         "re-create it with `h2l teacher import` or `h2l teacher build`") from None
    missing = [k for k in ("centroids", "answers", "temperature") if k not in data]
    if missing:
        raise InputError(f"teacher file {path} lacks key(s) {', '.join(missing)}",
                         "store centroids, answers and temperature (see README, teacher .npz)")
    version = int(data.get("format_version", NPZ_FORMAT_VERSION))
    if version > NPZ_FORMAT_VERSION:
        raise InputError(f"teacher file {path} has format_version {version}, newer than this h2l",
                         "upgrade h2l")
    queries = None
    if "train_queries" in data or "heldout_queries" in data:
        d = np.asarray(data["centroids"]).shape[-1]
        z = np.zeros((0, d), np.float32)
        e = np.zeros(0, np.int64)
        queries = QuerySet(data.get("train_queries", z), data.get("train_labels", e),
                           data.get("heldout_queries", z), data.get("heldout_labels", e))
    ids = data.get("cluster_ids")
    texts = data.get("answer_texts")
    if texts is not None and (texts.dtype.kind != "U" or texts.ndim != 1):
        raise InputError(f"teacher file {path}: answer_texts has dtype {texts.dtype}, shape {texts.shape}",
                         "store answer_texts as an (N,) str array")
    return make_teacher(
        data["centroids"], data["answers"], np.asarray(data["temperature"]).reshape(-1)[0]
        if np.asarray(data["temperature"]).size == 1 else data["temperature"],
        None if ids is None else [str(i) for i in np.asarray(ids).reshape(-1)],
        name=str(data.get("name", path.stem)), embedding_model=str(data.get("embedding_model", "")),
        queries=queries, answer_texts=None if texts is None else [str(t) for t in texts])
