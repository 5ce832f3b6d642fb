"""Bundle files: safe manifest paths, sha256 of files, the manifest's file list, and reading a listed file
once, checked.  Every file is opened through :class:`h2l.bundle.folder.Folder` (one directory handle,
no symlink followed, no FIFO waited on)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import IntegrityError
from .folder import Folder, check_plain, is_plain
from .layout import MANIFEST, SIGNATURE

__all__ = ["Folder", "check_plain", "file_entries", "is_plain", "read_npy", "read_verified", "safe_path",
           "sha256_file"]


def safe_path(root: Path, rel: str) -> Path:
    """Resolve a manifest path inside ``root``; absolute paths, '..', NUL bytes and escaping symlinks are refused.

    A check of the path as it is now, with messages that say which rule it breaks; reads go through
    :class:`Folder`, which refuses a symlink swapped in after this check."""
    pure = PurePosixPath(check_plain(rel))
    full = root.joinpath(*pure.parts)
    real_root = root.resolve()
    if not full.resolve().is_relative_to(real_root):
        raise IntegrityError(f"manifest file {rel!r} resolves outside the bundle (symlink)",
                             "remove the symlink; bundles hold plain files only")
    for i in range(1, len(pure.parts) + 1):
        if root.joinpath(*pure.parts[:i]).is_symlink():
            raise IntegrityError(f"bundle file {rel!r} is a symlink", "bundles hold plain files only; copy it in")
    return full


def sha256_file(path: Path) -> str:
    """sha256 hex of the regular file ``path`` (not followed if it is a symlink; a FIFO is refused, not read)."""
    path = Path(path)
    with Folder(path.parent) as folder:
        return folder.sha256(path.name)[0]


def file_entries(root: Path) -> list[dict]:
    """sha256 and size of every file under ``root`` except the manifest, sorted by path."""
    out = []
    with Folder(root) as folder:
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and rel not in (MANIFEST, SIGNATURE):
                digest, size = folder.sha256(rel)
                out.append({"path": rel, "sha256": digest, "bytes": size})
    return out


def read_npy(src: Path | bytes, name: str | None = None) -> np.ndarray:
    """A .npy from a path or from verified bytes, never unpickled."""
    try:
        return np.load(io.BytesIO(src) if isinstance(src, bytes) else src, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        label = name or (Path(src).name if not isinstance(src, bytes) else "npy bytes")
        raise IntegrityError(f"{label} is not a readable .npy ({type(exc).__name__})",
                             "re-export the bundle") from None


def read_verified(root: Path | Folder, entry: dict) -> bytes:
    """Read a listed file once, then check its size and sha256 on those very bytes (no check-then-use gap).

    One read into one buffer: the caller builds its session from the bytes that were hashed.  ``root``
    is the bundle's open :class:`Folder` (or its path, opened here).
    """
    folder = root if isinstance(root, Folder) else Folder(root)
    rel = entry["path"]
    with folder.open(rel, f"bundle file {rel}") as fh:  # missing, a symlink or not a file: exit 5, said so
        try:
            data = fh.read(entry["bytes"] + 1)  # one byte more than listed reveals a grown file
        except OSError as exc:
            raise IntegrityError(f"bundle file {rel} cannot be read ({exc.strerror})", "re-export the bundle") from None
    if len(data) != entry["bytes"]:
        raise IntegrityError(f"bundle file {rel} has {len(data)} bytes, manifest says {entry['bytes']} "
                             "(sha256 mismatch)", "re-export the bundle; do not edit its files")
    h = hashlib.sha256()
    view = memoryview(data)
    for i in range(0, len(view), 1 << 20):  # streamed over the buffer, no copy
        h.update(view[i:i + (1 << 20)])
    if h.hexdigest() != entry["sha256"]:
        raise IntegrityError(f"bundle file {rel} fails its sha256 check (modified or corrupt)",
                             "re-export the bundle; do not edit its files")
    return data
