"""Atomic file and directory writes: temp name, fsync, rename; and the byte formats written that way.

A crash, SIGKILL or Ctrl-C at any point leaves either the old file/folder, the
complete new one, or (for a fresh folder) nothing under the final name; never
a half-written one that a reader could take for good.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import OutputError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: changing it later would race with other threads


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a sibling temp file and a rename; ``mode`` (e.g. 0o600 for a private
    key) is set before the first byte is written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist", "create it first or choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write to {parent} ({exc.strerror})", "choose a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp makes 0600; published files get the usual mode
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK if mode is None else mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_file(root: Path, rel: str, data: bytes) -> None:
    """Atomically write ``root/rel``, creating its folders."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


def npy_bytes(arr: np.ndarray) -> bytes:
    """Little-endian float32 .npy bytes (format 1.0), the layout Rust, Go and UnifyWeaver read."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr, "<f4"), version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def check_output_file(path: Path, force: bool) -> None:
    """Refuse an existing output file unless ``force``; refuse a missing parent folder."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputError(f"output {path} already exists", "pass --force to replace it, or choose another --out")
    if not path.absolute().parent.is_dir():
        raise OutputError(f"folder {path.parent} does not exist", "create it first")


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse an existing output folder unless ``force``; refuse an unwritable parent."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputError(f"output {out} already exists", "pass --force to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a folder", "remove it or choose another --out")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise OutputError(f"parent folder {parent} does not exist", "create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"folder {parent} is not writable", "choose a writable --out")


@contextmanager
def staged_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a hidden staging folder; on success it replaces ``out`` by rename.

    Only a completed ``with`` block publishes the folder.  On any exception
    (including KeyboardInterrupt) the staging folder is removed.  With --force
    the old folder is renamed aside first and deleted after the swap (restored
    if the swap fails), so a kill between the two renames leaves no bundle
    rather than a mixed one.
    """
    out = Path(out).absolute()
    check_output_dir(out, force)
    parent = out.parent
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot create a folder in {parent} ({exc.strerror})", "choose a writable --out") from None
    aside = None
    try:
        os.chmod(stage, 0o777 & ~_UMASK)
        yield stage
        _fsync_tree(stage)
        if out.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, aside / "x")
        os.replace(stage, out)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if aside is not None and (aside / "x").exists() and not out.exists():
            os.replace(aside / "x", out)  # the swap failed: put the old folder back
            shutil.rmtree(aside, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
