"""Bundle files: safe manifest paths, sha256 of files, the manifest's file list, and reading a listed file
once, checked."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import IntegrityError
from .layout import MANIFEST, SIGNATURE


def safe_path(root: Path, rel: str) -> Path:
    """Resolve a manifest path inside ``root``; absolute paths, '..' and escaping symlinks are refused."""
    pure = PurePosixPath(rel)
    if not isinstance(rel, str) or "\\" in rel or rel.startswith("/") \
            or any(part in ("", ".", "..") for part in rel.split("/")):
        raise IntegrityError(f"manifest names file {rel!r}, which is not a plain relative path",
                             "the manifest was tampered with; re-export the bundle")
    full = root.joinpath(*pure.parts)
    real_root = root.resolve()
    if not full.resolve().is_relative_to(real_root):
        raise IntegrityError(f"manifest file {rel!r} resolves outside the bundle (symlink)",
                             "remove the symlink; bundles hold plain files only")
    for i in range(1, len(pure.parts) + 1):  # inside the folder too: a link can be swapped after the check
        if root.joinpath(*pure.parts[:i]).is_symlink():
            raise IntegrityError(f"bundle file {rel!r} is a symlink", "bundles hold plain files only; copy it in")
    return full


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entries(root: Path) -> list[dict]:
    """sha256 and size of every file under ``root`` except the manifest, sorted by path."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in (MANIFEST, SIGNATURE):
            out.append({"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size})
    return out


def read_npy(src: Path | bytes, name: str | None = None) -> np.ndarray:
    """A .npy from a path or from verified bytes, never unpickled."""
    try:
        return np.load(io.BytesIO(src) if isinstance(src, bytes) else src, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        label = name or (Path(src).name if not isinstance(src, bytes) else "npy bytes")
        raise IntegrityError(f"{label} is not a readable .npy ({type(exc).__name__})",
                             "re-export the bundle") from None


def read_verified(root: Path, entry: dict) -> bytes:
    """Read a listed file once, then check its size and sha256 on those very bytes (no check-then-use gap).

    One read into one buffer: the caller builds its session from the bytes that were hashed.
    """
    full = safe_path(root, entry["path"])
    try:
        with open(full, "rb") as fh:
            data = fh.read(entry["bytes"] + 1)  # one byte more than listed reveals a grown file
    except OSError:
        raise IntegrityError(f"bundle file {entry['path']} is missing or unreadable", "re-export the bundle") from None
    if len(data) != entry["bytes"]:
        raise IntegrityError(f"bundle file {entry['path']} has {len(data)} bytes, manifest says {entry['bytes']} "
                             "(sha256 mismatch)", "re-export the bundle; do not edit its files")
    h = hashlib.sha256()
    view = memoryview(data)
    for i in range(0, len(view), 1 << 20):  # streamed over the buffer, no copy
        h.update(view[i:i + (1 << 20)])
    if h.hexdigest() != entry["sha256"]:
        raise IntegrityError(f"bundle file {entry['path']} fails its sha256 check (modified or corrupt)",
                             "re-export the bundle; do not edit its files")
    return data
