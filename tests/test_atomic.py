"""Atomic publishing: fsync order for power loss, debris left by SIGKILL, the only-copy ``.old``, the atomic exchange.

Faults are injected by monkeypatching os.replace / os.fsync / shutil.rmtree (in-process), or by a child
process that SIGKILLs itself at the chosen instant, which leaves real debris on disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO
from h2l import atomic
from h2l.atomic import check_output_dir, check_output_file, clean_debris, staged_dir, write_bytes_atomic, write_file
from h2l.errors import OutputError

linux_only = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="maps fds to paths through /proc")


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def events(monkeypatch):
    """Record every os.replace and os.fsync (by path) in order; the real calls still run."""
    log: list[tuple[str, str]] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst, *a, **k):
        log.append(("replace", f"{src} -> {dst}"))
        return real_replace(src, dst, *a, **k)

    def fsync(fd):
        log.append(("fsync", _fd_path(fd)))
        return real_fsync(fd)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    return log


def _publish(out: Path, tag: str, force: bool = True) -> None:
    with staged_dir(out, force) as stage:
        write_file(stage, "a.txt", tag.encode())
        write_file(stage, "sub/b.txt", tag.encode())


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ fsync order

@linux_only
def test_write_bytes_atomic_fsyncs_file_then_folder_after_rename(tmp_path, events):
    write_bytes_atomic(tmp_path / "f.bin", b"data")
    kinds = [k for k, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].endswith(".partial") and events[2][1] == str(tmp_path)


@linux_only
@pytest.mark.parametrize("exchange", [True, False])
def test_staged_dir_fsyncs_files_folders_then_parent_after_each_rename(tmp_path, events, monkeypatch, exchange):
    out = tmp_path / "b"
    _publish(out, "old")
    if exchange and atomic._RENAMEAT2 is None:
        pytest.skip("renameat2 is not available in this libc")
    if not exchange:
        monkeypatch.setattr(atomic, "_RENAMEAT2", None)
    real_exchange = atomic.exchange

    def exchange_logged(a, b):
        done = real_exchange(a, b)
        if done:
            events.append(("exchange", f"{a} <-> {b}"))
        return done
    monkeypatch.setattr(atomic, "exchange", exchange_logged)
    events.clear()
    _publish(out, "new")
    # the renames/swaps that touch the published name itself
    publish = [i for i, (k, p) in enumerate(events)
               if (k == "exchange" and p.endswith(f"<-> {out}")) or
               (k == "replace" and str(out) in (p.split(" -> ")[0], p.split(" -> ")[1]))]
    assert len(publish) == (1 if exchange else 2), events
    for i in publish:
        assert events[i + 1] == ("fsync", str(tmp_path)), f"parent not fsynced after {events[i]}: {events[i + 1:]}"
    before = {p for k, p in events[:publish[0]] if k == "fsync"}
    stage = next(p for p in before if Path(p).parent == tmp_path and Path(p).name.startswith(".b."))
    assert {f"{stage}/sub", f"{stage}/a.txt", f"{stage}/sub/b.txt"} <= before, before
    assert (out / "a.txt").read_text() == "new" and _names(tmp_path) == ["b"]


# ------------------------------------------------------------------ the exchange

def test_force_publish_uses_one_atomic_exchange_on_linux(tmp_path, monkeypatch):
    if atomic._RENAMEAT2 is None:
        pytest.skip("renameat2 is not available in this libc")
    out = tmp_path / "b"
    _publish(out, "old")
    made = []
    real = atomic.tempfile.mkdtemp
    monkeypatch.setattr(atomic.tempfile, "mkdtemp", lambda *a, **k: made.append(k.get("suffix")) or real(*a, **k))
    _publish(out, "new")
    assert made == [".partial"], "an .old folder was created: the exchange was not used"
    assert (out / "a.txt").read_text() == "new" and _names(tmp_path) == ["b"]


def test_exchange_swaps_or_reports_unsupported(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from_a").touch()
    if atomic._RENAMEAT2 is not None:
        assert atomic.exchange(a, b) and _names(b) == ["from_a"] and _names(a) == []
    monkeypatch.setattr(atomic, "_RENAMEAT2", None)
    assert atomic.exchange(a, b) is False


# ------------------------------------------------------------------ in-process faults (fallback path)

def test_failure_between_the_two_renames_restores_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "b"
    _publish(out, "old")
    monkeypatch.setattr(atomic, "_RENAMEAT2", None)
    real = os.replace

    def replace(src, dst):
        if Path(src).name.endswith(".partial") and Path(dst) == out:
            raise OSError(28, "No space left on device (injected)")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="injected"):
        _publish(out, "new")
    assert (out / "a.txt").read_text() == "old"
    assert _names(tmp_path) == ["b"], "debris left after a failed publish"


def test_failed_fsync_publishes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "b"
    _publish(out, "old")

    def fsync(fd):
        raise OSError(5, "Input/output error (injected)")
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="injected"):
        _publish(out, "new")
    assert (out / "a.txt").read_text() == "old" and _names(tmp_path) == ["b"]


# ------------------------------------------------------------------ SIGKILL debris, cleaned by the next run

_CHILD = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path
    from h2l import atomic
    out, mode = Path(sys.argv[1]), sys.argv[2]
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if mode == "between_renames":      # fallback path: old renamed aside, new not yet in place
        atomic._RENAMEAT2 = None
        real = os.replace
        def replace(src, dst):
            if Path(dst) == out:
                die()
            return real(src, dst)
        os.replace = replace
    elif mode == "after_exchange":     # old swapped out to the stage name, not yet deleted
        shutil.rmtree = die
    with atomic.staged_dir(out, True) as stage:
        atomic.write_file(stage, "a.txt", b"new")
        if mode == "staging":
            die()
""")


def _kill_child(out: Path, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    p = subprocess.run([sys.executable, "-c", _CHILD, str(out), mode], env=env, capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()


def test_sigkill_between_renames_leaves_only_copy_that_is_restored(tmp_path):
    out = tmp_path / "b"
    _publish(out, "old")
    _kill_child(out, "between_renames")
    assert not out.exists()
    olds = [n for n in _names(tmp_path) if n.endswith(".old")]
    assert len(olds) == 1 and (tmp_path / olds[0] / "x" / "a.txt").read_text() == "old"
    # a later run never deletes the only copy: it puts it back, then refuses without --force
    with pytest.raises(OutputError, match="already exists"):
        check_output_dir(out, force=False)
    assert (out / "a.txt").read_text() == "old"
    assert _names(tmp_path) == ["b"], "debris not cleaned"


def test_sigkill_after_exchange_leaves_old_copy_that_is_removed(tmp_path):
    if atomic._RENAMEAT2 is None:
        pytest.skip("renameat2 is not available in this libc")
    out = tmp_path / "b"
    _publish(out, "old")
    _kill_child(out, "after_exchange")
    assert (out / "a.txt").read_text() == "new"
    partials = [n for n in _names(tmp_path) if n.endswith(".partial")]
    assert len(partials) == 1 and (tmp_path / partials[0] / "a.txt").read_text() == "old"
    _publish(out, "newer")
    assert (out / "a.txt").read_text() == "newer" and _names(tmp_path) == ["b"]


@pytest.mark.parametrize("existing", [False, True])
def test_sigkill_while_staging_leaves_partial_that_is_removed(tmp_path, existing):
    out = tmp_path / "b"
    if existing:
        _publish(out, "old")
    _kill_child(out, "staging")
    assert [n for n in _names(tmp_path) if n.endswith(".partial")]
    assert out.exists() == existing
    check_output_dir(out, force=True)
    assert _names(tmp_path) == (["b"] if existing else [])


def test_old_beside_an_existing_folder_is_removed(tmp_path):
    out = tmp_path / "b"
    _publish(out, "new")
    stale = tmp_path / ".b.abcd1234.old"
    (stale / "x").mkdir(parents=True)
    (stale / "x" / "a.txt").write_text("old")
    assert "removed .b.abcd1234.old" in clean_debris(out)
    assert _names(tmp_path) == ["b"] and (out / "a.txt").read_text() == "new"


def test_newest_only_copy_is_the_one_restored(tmp_path):
    out = tmp_path / "b"
    for i, name in enumerate((".b.aaaaaaaa.old", ".b.bbbbbbbb.old")):
        (tmp_path / name / "x").mkdir(parents=True)
        (tmp_path / name / "x" / "a.txt").write_text(f"v{i}")
        os.utime(tmp_path / name, ns=(10**18 + i, 10**18 + i))
    clean_debris(out)
    assert (out / "a.txt").read_text() == "v1" and _names(tmp_path) == ["b"]


def test_live_stage_and_other_names_are_left_alone(tmp_path):
    out = tmp_path / "b"
    keep = [tmp_path / ".b.c.abcdefgh.partial", tmp_path / ".bb.abcdefgh.partial", tmp_path / "b.abcdefgh.old"]
    for p in keep:
        p.mkdir()
    with staged_dir(out, False) as stage:
        write_file(stage, "a.txt", b"x")
        assert clean_debris(out) == []  # the live stage is flock'ed by its writer
        assert stage.exists()
    assert all(p.exists() for p in keep)


def test_partial_files_of_a_killed_file_write_are_removed(tmp_path):
    target = tmp_path / "t.npz"
    (tmp_path / ".t.npz.k1m2n3p4.partial").write_bytes(b"half")
    live = tmp_path / ".t.npz.live0000.partial"
    live.write_bytes(b"being written")
    fd = atomic._lock(live)  # as a writer in another process would hold it
    try:
        check_output_file(target, force=False)
    finally:
        os.close(fd)
    assert _names(tmp_path) == [".t.npz.live0000.partial"]


def test_cli_export_after_a_sigkill_restores_then_replaces(tmp_path, runner, teacher_npz):
    from h2l.cli import app

    out = tmp_path / "b"
    assert runner.invoke(app, ["export", str(teacher_npz), "--out", str(out)]).exit_code == 0
    aside = tmp_path / ".b.zzzzzzzz.old"
    aside.mkdir()
    os.replace(out, aside / "x")  # the state a SIGKILL between the two renames leaves
    r = runner.invoke(app, ["export", str(teacher_npz), "--out", str(out)])
    assert r.exit_code == 4 and "already exists" in r.output and (out / "manifest.json").is_file()
    assert runner.invoke(app, ["verify", str(out), "--provider", "cpu"]).exit_code == 0
    assert runner.invoke(app, ["export", str(teacher_npz), "--out", str(out), "--force"]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".b.")) == []


# ------------------------------------------------------------------ two real exports racing for one --out

_RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from h2l import atomic
    ready, go, fallback = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
    if fallback:                       # no renameat2: the flock around check + rename
        atomic._RENAMEAT2 = None
    real = atomic._fsync_tree
    def at_barrier(root):              # the stage is complete; wait here until both racers are
        real(root)
        ready.touch()
        end = time.monotonic() + 600
        while not go.exists():
            if time.monotonic() > end:
                sys.exit(99)
            time.sleep(0.001)
    atomic._fsync_tree = at_barrier
    sys.argv = ["h2l", *sys.argv[4:]]
    from h2l.cli import main
    main()
""")


@pytest.mark.parametrize("fallback", [False, True], ids=["renameat2", "flock"])
def test_two_racing_exports_without_force_one_wins_the_other_exits_4(tmp_path, fallback):
    """Both `h2l export` processes pass the existence check and stage a complete bundle, then publish at
    the same instant: exactly one publishes, the other exits 4 with the one-line error and writes nothing."""
    if not fallback and atomic._RENAMEAT2 is None:
        pytest.skip("renameat2 is not available in this libc")
    from h2l.bundle.reader import open_bundle
    from h2l.importers.npz import save_npz
    from h2l.model.synthetic import synthetic_teacher
    from h2l.verify.checks import verify_bundle

    work, out = tmp_path / "work", tmp_path / "pub" / "bundle"
    work.mkdir()
    out.parent.mkdir()
    fingerprints = {}
    for i in range(2):
        t = synthetic_teacher(10 + i, 32, seed=40 + i)
        save_npz(t, work / f"t{i}.npz")
        fingerprints[i] = t.fingerprint()
    go = work / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(work / f"ready{i}"), str(go), str(int(fallback)),
                               "export", "--teacher", str(work / f"t{i}.npz"), "--out", str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        deadline = time.monotonic() + 600
        while not all((work / f"ready{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.01)
        assert not out.exists()  # both staged past the check, neither has published
        go.touch()
        results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = [r[0] for r in results]
    assert sorted(codes) == [0, 4], results
    winner, loser = codes.index(0), codes.index(4)
    err = results[loser][2].strip()
    assert err.startswith("error: output ") and "already exists" in err and "\n" not in err and ". fix: " in err, err
    bundle = open_bundle(out)  # complete: every hash and model checks out
    assert bundle.manifest["teacher"]["sha256"] == fingerprints[winner] != fingerprints[loser]
    assert verify_bundle(out, provider="cpu").passed
    assert _names(out.parent) == ["bundle"], "the loser left debris beside the bundle"
