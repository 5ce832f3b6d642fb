"""Read a bundle folder through one directory descriptor, as the Rust runtime does (runtimes/rust/src/folder.rs).

The folder is opened once; every file is then opened relative to that descriptor, one path component at a
time with ``O_NOFOLLOW`` (folders with ``O_DIRECTORY``, the file itself with ``O_NONBLOCK``).  So:

* a symlink swapped in after the manifest was read is refused, never followed (no check-then-open gap);
* a FIFO or device cannot block the open: it is refused as not a regular file;
* a bundle republished by a rename while it is being read is read wholly from the folder that was opened.

Where the OS has no ``dir_fd`` opens (Windows), each component is checked with ``lstat`` and the file is
opened by path: the same refusals, with the check-then-open gap this module closes elsewhere.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import weakref
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError, IntegrityError

_AT = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FIX = "bundles hold plain files only; re-export the bundle with `h2l export`"
CHUNK = 1 << 20


def is_plain(rel: object) -> bool:
    """One rule in Python, Rust and Go: '/'-separated parts, none empty, "." or ".."; no '\\', no NUL; not absolute."""
    return isinstance(rel, str) and "\\" not in rel and "\0" not in rel and not rel.startswith("/") \
        and all(part not in ("", ".", "..") for part in rel.split("/"))


def check_plain(rel: object) -> str:
    """``rel`` if it is a plain relative path, else an IntegrityError (exit 5): paths come from the manifest."""
    if not is_plain(rel):
        raise IntegrityError(f"manifest names file {rel!r}, which is not a plain relative path",
                             "the manifest was tampered with; re-export the bundle")
    return str(rel)


class Folder:
    """An open bundle folder: :meth:`open`, :meth:`read` and :meth:`sha256` of files relative to it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._fd: int | None = None
        if not _AT:
            if not self.root.is_dir():
                raise InputError(f"bundle folder {self.root} does not exist", "pass the --out folder of `h2l export`")
            return
        try:
            self._fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            why = getattr(exc, "strerror", None) or "not a valid path"
            raise InputError(f"bundle folder {self.root} does not exist or cannot be opened ({why})",
                             "pass the --out folder of `h2l export`") from None
        self._close = weakref.finalize(self, os.close, self._fd)  # closed with the last reference

    def close(self) -> None:
        if self._fd is not None:
            self._close()

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, rel: str, what: str | None = None) -> BinaryIO:
        """``rel`` opened for reading: a plain relative path, no symlink on it, a regular file (else exit 5)."""
        what = what or f"bundle file {rel!r}"
        fd = self._open_at(check_plain(rel), what) if self._fd is not None else self._open_checked(rel, what)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise IntegrityError(f"{what} is not a regular file", _FIX)
            os.set_blocking(fd, True)  # O_NONBLOCK kept a FIFO from blocking the open; a file reads normally
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _open_at(self, rel: str, what: str) -> int:
        parts = rel.split("/")
        at = self._fd
        assert at is not None
        held: int | None = None
        try:
            for i, part in enumerate(parts):
                last = i + 1 == len(parts)
                flags = os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
                try:
                    fd = os.open(part, flags, dir_fd=at)
                except OSError as exc:
                    raise _open_error(exc, what, last) from None
                if held is not None:
                    os.close(held)
                held = at = fd
        except BaseException:
            if held is not None:
                os.close(held)
            raise
        assert held is not None
        return held

    def _open_checked(self, rel: str, what: str) -> int:  # pragma: no cover - no dir_fd opens (Windows)
        walked = self.root
        for part in check_plain(rel).split("/"):
            walked = walked / part
            if walked.is_symlink():
                raise IntegrityError(f"{what} is a symlink", _FIX)
        try:
            return os.open(walked, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise _open_error(exc, what, True) from None

    def read(self, rel: str, cap: int, what: str | None = None) -> bytes:
        """The whole of ``rel``, refused before a byte is read when its size is over ``cap``."""
        what = what or f"bundle file {rel!r}"
        with self.open(rel, what) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > cap:
                raise IntegrityError(f"{what} is {size:,} bytes, over the {cap:,}-byte limit (refused unread)", _FIX)
            data = fh.read(cap + 1)
        if len(data) > cap:  # grew while we read it
            raise IntegrityError(f"{what} is over the {cap:,}-byte limit (refused)", _FIX)
        return data

    def sha256(self, rel: str) -> tuple[str, int]:
        """(sha256 hex, size) of ``rel``, streamed from the one open handle."""
        with self.open(rel) as fh:
            return sha256_stream(fh)

    def __repr__(self) -> str:
        return f"Folder({str(self.root)!r})"


def sha256_stream(fh: BinaryIO) -> tuple[str, int]:
    """(sha256 hex, bytes read) of an open file, read to its end in 1 MiB chunks."""
    h, n = hashlib.sha256(), 0
    for chunk in iter(lambda: fh.read(CHUNK), b""):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def _open_error(exc: OSError, what: str, last: bool) -> IntegrityError:
    if exc.errno == errno.ELOOP:
        return IntegrityError(f"{what} is a symlink" if last else f"{what} lies under a symlinked folder", _FIX)
    if exc.errno == errno.ENOTDIR and not last:
        return IntegrityError(f"{what} lies under a symlink or a file, not a folder", _FIX)
    if exc.errno == errno.ENOENT:
        return IntegrityError(f"{what} is missing", "re-export the bundle")
    return IntegrityError(f"{what} cannot be read ({exc.strerror})", "re-export the bundle")
