"""Bundle files are read through one directory handle, no symlink followed, no FIFO waited on (issue 20, item 8).

Each case changes a bundle *after* its manifest was read (open_bundle with defer_models, or between the
check and the read), which is when a path-based reader follows a swapped-in symlink or blocks on a FIFO.
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from h2l.bundle.files import Folder, read_verified, sha256_file
from h2l.bundle.reader import open_bundle
from h2l.errors import IntegrityError
from h2l.export import export_onnx
from h2l.model.synthetic import synthetic_teacher

fifo_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


@pytest.fixture
def bundle(tmp_path, small_teacher):
    return export_onnx(small_teacher, tmp_path / "b").out


def _entry(b, rel):
    return next(e for e in b.manifest["files"] if e["path"] == rel)


def _in_thread(fn, fifo, timeout=30.0):
    """Run ``fn`` in a thread; return what it raised (None when it returned), or fail when it blocks."""
    box: dict = {}

    def run():
        try:
            fn()
            box["exc"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["exc"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():  # blocked in open(): a writer end lets it return, so the thread does not outlive the test
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(10)
        pytest.fail(f"reading {fifo.name} blocked on a FIFO for {timeout:.0f} s")
    return box["exc"]


def _fifo_in_place_of(path):
    path.unlink()
    os.mkfifo(path)
    return path


@fifo_only
def test_a_fifo_swapped_in_after_the_manifest_is_refused_without_blocking(bundle):
    opened = open_bundle(bundle, defer_models=True)  # manifest read, model not yet
    fifo = _fifo_in_place_of(bundle / "teacher.onnx")
    exc = _in_thread(lambda: opened.read_verified("teacher.onnx"), fifo)
    assert isinstance(exc, IntegrityError) and "teacher.onnx is not a regular file" in exc.message, exc


@fifo_only
def test_open_bundle_and_sha256_file_refuse_a_fifo_without_blocking(bundle):
    fifo = _fifo_in_place_of(bundle / "golden" / "inputs.npy")
    exc = _in_thread(lambda: open_bundle(bundle), fifo)
    assert isinstance(exc, IntegrityError) and "golden/inputs.npy is not a regular file" in exc.message, exc
    exc = _in_thread(lambda: sha256_file(fifo), fifo)
    assert isinstance(exc, IntegrityError) and "not a regular file" in exc.message, exc


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_a_symlink_swapped_in_after_the_manifest_is_refused(bundle, tmp_path, where):
    """The link points at identical bytes, so only the no-follow open can refuse it."""
    opened = open_bundle(bundle, defer_models=True)
    target = (bundle / "golden" if where == "inside" else tmp_path) / "same.onnx"
    shutil.copy(bundle / "teacher.onnx", target)
    (bundle / "teacher.onnx").unlink()
    (bundle / "teacher.onnx").symlink_to(target)
    with pytest.raises(IntegrityError, match="symlink|resolves outside"):
        opened.read_verified("teacher.onnx")
    with Folder(bundle) as folder, pytest.raises(IntegrityError, match="'teacher.onnx' is a symlink"):
        folder.open("teacher.onnx")  # the open itself refuses it, whatever a path check said before


def test_a_symlinked_folder_on_the_path_is_refused(bundle, tmp_path):
    opened = open_bundle(bundle, defer_models=True)
    shutil.copytree(bundle / "golden", tmp_path / "golden_copy")
    shutil.rmtree(bundle / "golden")
    (bundle / "golden").symlink_to(tmp_path / "golden_copy")
    with Folder(bundle) as folder, pytest.raises(IntegrityError, match="lies under a symlink"):
        folder.open("golden/inputs.npy")
    with pytest.raises(IntegrityError, match="symlink|resolves outside"):
        read_verified(opened.folder, _entry(opened, "golden/inputs.npy"))


def test_a_bundle_renamed_away_while_open_is_read_from_the_folder_that_was_opened(bundle, tmp_path):
    """A republish by rename: the reader holds the old folder's handle, so it reads the old files, never
    the new bundle's files against the old manifest (a path-based reader fails their sha256, or worse)."""
    opened = open_bundle(bundle, defer_models=True)
    old_teacher = (bundle / "teacher.onnx").read_bytes()
    os.rename(bundle, tmp_path / "old")
    export_onnx(synthetic_teacher(9, 32, seed=11), bundle)  # a different bundle now has the name
    assert (bundle / "teacher.onnx").read_bytes() != old_teacher
    assert opened.read_verified("teacher.onnx") == old_teacher
    assert opened.golden_inputs().shape[1] == 32


def test_folder_refuses_what_the_manifest_may_not_name(bundle):
    with Folder(bundle) as folder:
        for rel in ("a\0b", "golden/inputs.npy\0", "../b/teacher.onnx", "/etc/passwd", "golden//inputs.npy"):
            with pytest.raises(IntegrityError, match="not a plain relative path"):
                folder.open(rel)
        with pytest.raises(IntegrityError, match="'nope.onnx' is missing"):
            folder.open("nope.onnx")
        with pytest.raises(IntegrityError, match="'golden' is not a regular file"):
            folder.open("golden")
        assert folder.open("golden/inputs.npy").read() == (bundle / "golden" / "inputs.npy").read_bytes()
