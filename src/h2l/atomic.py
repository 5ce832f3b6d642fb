"""Atomic file and directory writes: temp name, fsync, rename.

A crash, SIGKILL or Ctrl-C at any point leaves either the old file/folder, the
complete new one, or (for a fresh folder) nothing under the final name; never
a half-written one that a reader could take for good.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a sibling temp file and a rename."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist", "create it first or choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write to {parent} ({exc.strerror})", "choose a writable folder") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files get the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse an existing output folder unless ``force``; refuse an unwritable parent."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputError(f"output {out} already exists", "pass --force to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a folder", "remove it or choose another --out")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"parent folder {parent} does not exist", "create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"folder {parent} is not writable", "choose a writable --out")


@contextmanager
def staged_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a hidden staging folder; on success it replaces ``out`` by rename.

    Only a completed ``with`` block publishes the folder.  On any exception
    (including KeyboardInterrupt) the staging folder is removed.  With --force
    the old folder is renamed aside first and deleted after the swap, so a
    kill between the two renames leaves no bundle rather than a mixed one.
    """
    out = Path(out)
    check_output_dir(out, force)
    parent = out.resolve().parent
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot create a folder in {parent} ({exc.strerror})", "choose a writable --out") from None
    try:
        os.chmod(stage, 0o777 & ~_umask())
        yield stage
        _fsync_tree(stage)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old / "x")
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
