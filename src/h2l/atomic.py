"""Atomic file and directory writes: temp name, fsync, rename, fsync the folder.

A crash, SIGKILL, Ctrl-C or power loss at any point leaves either the old
file/folder, the complete new one, or (for a fresh folder) nothing under the
final name; never a half-written one that a reader could take for good.

Power loss: file contents are fsynced before the rename, and the folder that
holds a renamed entry is fsynced after it, so the rename itself is durable.

Debris: a SIGKILL can leave ``.NAME.*.partial`` (a stage, or with the exchange
below the old bundle swapped out) and, on the fallback path, ``.NAME.*.old``
(the old bundle renamed aside).  The next :func:`check_output_dir` for NAME
removes every ``.partial`` and every ``.old`` while NAME exists; an ``.old``
with no NAME beside it is the only copy of the old bundle, so it is restored,
never deleted.  A live writer holds an ``flock`` on its stage, so a concurrent
cleaner skips it.  With --force on Linux the folder is published with one
``renameat2(RENAME_EXCHANGE)``, so the only-copy state cannot arise (elsewhere:
two renames).  Without --force nothing is ever replaced: the final rename is
``renameat2(RENAME_NOREPLACE)`` (elsewhere: check and rename under an flock on
the parent), so of two concurrent runs one publishes, the other exits 4.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; a concurrent cleaner is not guarded there
    fcntl = None  # type: ignore[assignment]  # mypy cannot type an optional module as Module | None


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: changing it later would race with other threads


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so the renames and creations inside it survive power loss (no-op where unsupported)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return  # e.g. Windows cannot open a folder; its renames are journaled by NTFS
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # some filesystems refuse folder fsync
            raise
    finally:
        os.close(fd)


def _stage_file(path: Path, data: bytes, mode: int | None) -> tuple[Path, int]:
    """``data`` in a flock'ed, fsynced sibling temp file of ``path``: (temp path, the lock's fd)."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist", "create it first or choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write to {parent} ({exc.strerror})", "choose a writable folder") from None
    lock = os.dup(fd)  # the flock lives on the open file: held through the rename, after fh closes
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a concurrent clean_debris leaves a live temp file alone
        with os.fdopen(fd, "wb") as fh:
            # mkstemp makes 0600; published files get the usual mode
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK if mode is None else mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        os.close(lock)
        raise
    return Path(tmp), lock


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a sibling temp file, a rename and an fsync of the folder.

    ``mode`` (e.g. 0o600 for a private key) is set before the first byte is written."""
    path = Path(path)
    tmp, lock = _stage_file(path, data, mode)
    try:
        os.replace(tmp, path)
        fsync_dir(tmp.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(lock)


def write_files_atomic(files: list[tuple[Path, bytes, int | None]], force: bool) -> None:
    """Write several files as one step (a key pair): all to temp names first, then renamed in the order given.

    A failed write leaves every old file untouched; a failed rename puts back what the renames before it
    replaced (hard-linked aside first).  A SIGKILL between two renames leaves the first files new and the
    rest old, never one missing.  Without ``force`` every rename refuses an existing name (:func:`rename_new`).
    """
    staged: list[tuple[Path, int, Path]] = []  # (temp file, its lock, final name)
    asides: list[Path] = []  # old files hard-linked aside
    done: list[tuple[Path, Path | None]] = []  # (published name, its old file aside or None)
    try:
        for path, data, mode in files:
            staged.append((*_stage_file(Path(path), data, mode), Path(path)))
        for tmp, _, path in staged:
            aside = _link_aside(path) if force else None
            asides += [aside] if aside is not None else []
            (os.replace if force else rename_new)(tmp, path)
            done.append((path, aside))
        for parent in dict.fromkeys(tmp.parent for tmp, _, _ in staged):
            fsync_dir(parent)
    except BaseException as exc:
        for path, old in reversed(done):  # undo: the old files back, the new ones gone
            if old is not None:
                os.replace(old, path)
            else:
                path.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise OutputError(f"output {exc.filename} already exists", "pass --force to replace it") from None
        if isinstance(exc, OSError):
            names = " and ".join(str(p) for p, _, _ in files)
            raise OutputError(f"cannot write {names} ({exc.strerror}); none of them was replaced",
                              "free some space or choose another path") from None
        raise
    finally:
        for tmp, lock, _ in staged:
            tmp.unlink(missing_ok=True)
            os.close(lock)
        for link in asides:
            link.unlink(missing_ok=True)


def _link_aside(path: Path) -> Path | None:
    """A hard link to the current ``path`` at a ``.NAME.*.partial`` name (debris if killed), or None."""
    if not os.path.lexists(path):
        return None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # link() wants a free name; mkstemp picked one that matches the debris pattern
    try:
        os.link(path, tmp)
    except OSError:  # no hard links on this filesystem: a copy keeps the bytes and the mode
        shutil.copy2(path, tmp)
    return Path(tmp)


def write_file(root: Path, rel: str, data: bytes) -> None:
    """Atomically write ``root/rel``, creating its folders."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)


def check_output_file(path: Path, force: bool) -> None:
    """Remove temp files a killed write left; refuse an existing output file unless ``force``, or a missing parent."""
    path = Path(path)
    if path.absolute().parent.is_dir():
        clean_debris(path)
    if path.exists() and not force:
        raise OutputError(f"output {path} already exists", "pass --force to replace it, or choose another --out")
    if not path.absolute().parent.is_dir():
        raise OutputError(f"folder {path.parent} does not exist", "create it first")


def check_output_dir(out: Path, force: bool) -> None:
    """Clean up debris a killed run left beside ``out``; refuse an existing ``out`` unless ``force``,
    and an unwritable parent."""
    out = Path(out)
    if out.absolute().parent.is_dir():
        clean_debris(out)
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
    """Yield a hidden staging folder; on success it replaces ``out`` atomically.

    Only a completed ``with`` block publishes the folder.  On any exception
    (including KeyboardInterrupt) the staging folder is removed.  Without
    ``force`` the final rename itself refuses an ``out`` that appeared since the
    check (:func:`rename_new`), so two concurrent runs cannot replace each
    other: one publishes, the other fails with OutputError (exit 4).  With --force
    on Linux the stage and the old folder are swapped in one
    ``renameat2(RENAME_EXCHANGE)`` and the old one, now at the stage's name, is
    deleted.  Elsewhere the old folder is renamed aside to ``.NAME.*.old`` first
    and deleted after the second rename (restored if it fails, and by the next
    run if a kill came between the two).
    """
    out = Path(out).absolute()
    check_output_dir(out, force)
    parent = out.parent
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot create a folder in {parent} ({exc.strerror})", "choose a writable --out") from None
    lock = _lock(stage)  # held until we are done: a concurrent cleaner leaves a live stage alone
    aside = aside_lock = None
    try:
        os.chmod(stage, 0o777 & ~_UMASK)
        yield stage
        _fsync_tree(stage)
        if not force:  # the check above was advisory: the name must still be free at the rename itself
            try:
                rename_new(stage, out)
            except FileExistsError:
                raise OutputError(f"output {out} already exists (another run published it while this one worked)",
                                  "pass --force to replace it, or choose another --out") from None
            fsync_dir(parent)
            return
        if out.exists() and exchange(stage, out):
            fsync_dir(parent)
            shutil.rmtree(stage, ignore_errors=True)  # the old folder, swapped out
            return
        if out.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            aside_lock = _lock(aside)
            os.replace(out, aside / "x")
            fsync_dir(parent)
        os.replace(stage, out)
        fsync_dir(parent)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if aside is not None and (aside / "x").exists() and not out.exists():
            os.replace(aside / "x", out)  # the swap failed: put the old folder back
            fsync_dir(parent)
            shutil.rmtree(aside, ignore_errors=True)
        raise
    finally:
        for fd in (lock, aside_lock):
            if fd is not None:
                os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file, then every folder bottom-up (the stage itself last), before the publishing rename."""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    folders = [p for p in root.rglob("*") if p.is_dir()]
    for d in sorted(folders, key=lambda p: len(p.parts), reverse=True) + [root]:
        fsync_dir(d)


# ------------------------------------------------------------------ atomic exchange and debris

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.4
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def _rename2(a: Path, b: Path, flags: int) -> bool:
    """Linux ``renameat2(a, b, flags)``: True when done, False where unsupported; EEXIST is FileExistsError."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), str(b))
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # old kernel, or the fs refuses
        return False
    raise OSError(err, f"cannot rename {a} to {b}: {os.strerror(err)}")


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    return _rename2(a, b, _RENAME_EXCHANGE)


def rename_new(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` only if ``dst`` does not exist, else FileExistsError (``src`` is kept).

    Linux: one atomic ``renameat2(RENAME_NOREPLACE)``; elsewhere check and rename under an flock on the
    parent folder, which every caller takes (Windows' rename refuses an existing name by itself)."""
    if _rename2(src, dst, _RENAME_NOREPLACE):
        return
    fd = _lock(Path(dst).absolute().parent)
    try:
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
        os.rename(src, dst)
    finally:
        if fd is not None:
            os.close(fd)


def _lock(path: Path, blocking: bool = True) -> int | None:
    """An exclusive flock on ``path`` (a file or folder): the fd, or None when another holder has it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


def debris(out: Path) -> tuple[list[Path], list[Path]]:
    """(``.NAME.*.partial``, ``.NAME.*.old``) entries beside ``out``, oldest first."""
    out = Path(out).absolute()
    pat = re.compile(rf"\.{re.escape(out.name)}\.[a-z0-9_]{{8}}\.(partial|old)")  # tempfile's 8 random chars
    found: dict[str, list[Path]] = {"partial": [], "old": []}
    try:
        names = os.listdir(out.parent)
    except OSError:
        return [], []
    for name in names:
        if m := pat.fullmatch(name):
            found[m[1]].append(out.parent / name)
    key = lambda p: (p.lstat().st_mtime_ns, p.name)  # noqa: E731
    return sorted(found["partial"], key=key), sorted(found["old"], key=key)


def clean_debris(out: Path) -> list[str]:
    """Remove what killed runs left beside ``out``; restore an ``.old`` that is the only copy.  Returns the actions."""
    out = Path(out).absolute()
    actions = []
    partials, olds = debris(out)
    for p in partials:
        fd = _lock(p, blocking=False)
        if fd is None and p.exists():
            continue  # a live writer holds it
        try:
            _remove(p)
            actions.append(f"removed {p.name}")
        finally:
            if fd is not None:
                os.close(fd)
    for old in reversed(olds):  # newest first: the most recent bundle is the one to restore
        fd = _lock(old, blocking=False)
        if fd is None:
            continue  # a live fallback publish is between its renames
        try:
            if not out.exists() and not out.is_symlink() and (old / "x").exists():
                os.replace(old / "x", out)
                fsync_dir(out.parent)
                actions.append(f"restored {out.name} from {old.name}")
            if out.exists():
                _remove(old)
                actions.append(f"removed {old.name}")
        finally:
            os.close(fd)
    if actions:
        fsync_dir(out.parent)
    return actions


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)
