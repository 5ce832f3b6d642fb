"""Teacher files: the documented .npz format (fixed zip timestamps, never unpickled) and plain .npy reads."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic
from ..errors import InputError
from ..model.teacher import NORM_EPS, QuerySet, Routing, Scoring, Targets, Teacher, make_teacher
from ..writers import npz_bytes

NPZ_FORMAT_VERSION = 2
#: Keys only a format_version 2 file may hold (the general teacher); a flat teacher is written as version 1,
#: byte for byte as before version 2 existed.
V2_KEYS = ("head_weights", "key_heads", "query_norm", "query_eps", "normalize_keys", "top_k", "renormalize",
           "normalize_output", "target_embeddings", "target_ids", "target_titles")


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

    Keys: centroids (N_k,d) f4, answers (H,d) f4, temperature () f8, cluster_ids (H,) str,
    name () str, embedding_model () str, format_version () i8, when queries are stored
    train_queries, train_labels, heldout_queries, heldout_labels, and for Q-A teachers
    answer_texts (H,) str (each head's answer text, in head order).  A flat teacher is
    format_version 1; a general one (README, "Teachers") is 2 and adds query_norm () str,
    query_eps () f8, normalize_keys () bool, top_k () i8 (0: all keys), renormalize () bool,
    normalize_output () bool, and when used head_weights (H,d,d) f4, key_heads (N_k,) i8,
    target_embeddings (T,d) f4, target_ids (T,) str, target_titles (T,) str.
    """
    arrays = {
        "format_version": np.array(1 if teacher.is_flat else NPZ_FORMAT_VERSION, np.int64),
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
    if not teacher.is_flat:
        arrays.update(_general_arrays(teacher))
    write_bytes_atomic(Path(path), npz_bytes(arrays))


def _general_arrays(t: Teacher) -> dict[str, np.ndarray]:
    s, r = t.scoring, t.routing
    out = {"query_norm": np.array(s.query_norm, dtype=str), "query_eps": np.array(s.eps, np.float64),
           "normalize_keys": np.array(s.normalize_keys), "top_k": np.array(r.top_k or 0, np.int64),
           "renormalize": np.array(r.renormalize), "normalize_output": np.array(t.normalize_output)}
    if t.head_weights is not None:
        out["head_weights"] = t.head_weights
    if t.key_heads is not None:
        out["key_heads"] = t.key_heads
    if t.targets is not None:
        out.update(target_embeddings=t.targets.embeddings, target_ids=np.array(t.targets.ids, dtype=str),
                   target_titles=np.array(t.targets.titles, dtype=str))
    return out


def _scalar(data: dict, key: str, kind: str, path: Path, default):
    """A 0-d array of ``kind`` (numpy dtype kinds) as a Python value, or ``default`` when absent."""
    if key not in data:
        return default
    a = np.asarray(data[key])
    if a.shape != () or a.dtype.kind not in kind:
        raise InputError(f"teacher file {path}: {key} has dtype {a.dtype}, shape {a.shape}",
                         "re-create it with `h2l teacher import`")
    return a.item()


def _str_list(data: dict, key: str, path: Path) -> list[str] | None:
    a = data.get(key)
    if a is None:
        return None
    if a.dtype.kind != "U" or a.ndim != 1:
        raise InputError(f"teacher file {path}: {key} has dtype {a.dtype}, shape {a.shape}",
                         f"store {key} as a 1-d str array")
    return [str(t) for t in a]


def _general_kwargs(data: dict, path: Path) -> dict:
    """make_teacher's general keyword arguments from a version-2 file (defaults where absent)."""
    top_k = int(_scalar(data, "top_k", "iu", path, 0))
    kw = {"scoring": Scoring(str(_scalar(data, "query_norm", "U", path, "floor")),
                             float(_scalar(data, "query_eps", "f", path, NORM_EPS)),
                             bool(_scalar(data, "normalize_keys", "b", path, True))),
          "routing": Routing(top_k or None, bool(_scalar(data, "renormalize", "b", path, True))),
          "normalize_output": bool(_scalar(data, "normalize_output", "b", path, False)),
          "head_weights": data.get("head_weights"), "key_heads": data.get("key_heads")}
    if "target_embeddings" in data:
        ids, titles = _str_list(data, "target_ids", path), _str_list(data, "target_titles", path)
        if ids is None or titles is None:
            raise InputError(f"teacher file {path} has target_embeddings without target_ids/target_titles",
                             "re-create it with `h2l teacher import`")
        kw["targets"] = Targets(data["target_embeddings"], tuple(ids), tuple(titles))
    return kw


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
    version = int(data.get("format_version", 1))
    if version > NPZ_FORMAT_VERSION:
        raise InputError(f"teacher file {path} has format_version {version}, newer than this h2l",
                         "upgrade h2l")
    general = sorted(k for k in V2_KEYS if k in data)
    if version < 2 and general:
        raise InputError(f"teacher file {path} is format_version {version} but holds {', '.join(general)}",
                         "re-create it with this h2l (general teachers are format_version 2)")
    queries = None
    if "train_queries" in data or "heldout_queries" in data:
        d = np.asarray(data["centroids"]).shape[-1]
        z = np.zeros((0, d), np.float32)
        e = np.zeros(0, np.int64)
        queries = QuerySet(data.get("train_queries", z), data.get("train_labels", e),
                           data.get("heldout_queries", z), data.get("heldout_labels", e))
    ids = data.get("cluster_ids")
    texts = _str_list(data, "answer_texts", path)
    return make_teacher(
        data["centroids"], data["answers"], np.asarray(data["temperature"]).reshape(-1)[0]
        if np.asarray(data["temperature"]).size == 1 else data["temperature"],
        None if ids is None else [str(i) for i in np.asarray(ids).reshape(-1)],
        name=str(data.get("name", path.stem)), embedding_model=str(data.get("embedding_model", "")),
        queries=queries, answer_texts=texts, **(_general_kwargs(data, path) if version >= 2 else {}))
