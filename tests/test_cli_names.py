"""One spelling per CLI option (issue 20): the teacher is the first argument, --embed-dim, --student and
--provider everywhere; the old spellings (--teacher, --d, --checkpoint, --providers) still work but are hidden
from --help, and giving both spellings of one option is a usage error."""

from __future__ import annotations

import json

import pytest

from conftest import one_line_error
from h2l.cli import app

OLD = ("--teacher", "--d ", "--checkpoint", "--providers")


@pytest.mark.parametrize("command, new", [
    (["export"], ["TEACHER", "--student", "--out"]),
    (["distill"], ["TEACHER", "--out"]),
    (["teacher", "info"], ["TEACHER"]),
    (["bench"], ["--embed-dim", "--student", "--provider"]),
    (["arch"], ["--embed-dim"]),
])
def test_help_shows_the_new_spellings_only(runner, command, new):
    r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for name in new:
        assert name in r.stdout, (name, r.stdout)
    for name in OLD:
        assert name not in r.stdout, (name, r.stdout)


def test_teacher_as_argument_or_old_option_gives_the_same_bundle(runner, tmp_path, teacher_npz):
    """Exports are byte-reproducible, so the two spellings must give identical manifests."""
    a = runner.invoke(app, ["export", str(teacher_npz), "--out", str(tmp_path / "a")])
    b = runner.invoke(app, ["export", "--teacher", str(teacher_npz), "--out", str(tmp_path / "b")])
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_teacher_info_and_distill_take_the_old_option_too(runner, tmp_path, teacher_npz):
    args = ["--json", "--no-routing"]
    a = runner.invoke(app, ["teacher", "info", str(teacher_npz), *args])
    b = runner.invoke(app, ["teacher", "info", "--teacher", str(teacher_npz), *args])
    assert a.exit_code == 0 and a.stdout == b.stdout and json.loads(a.stdout)["path"] == str(teacher_npz)
    # distill reads the teacher named by --teacher: a missing one is the missing-teacher input error
    r = runner.invoke(app, ["distill", "--teacher", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "s.pt")])
    one_line_error(r, 3, "nope.npz does not exist")


@pytest.mark.parametrize("args, message", [
    (["export", "t.npz", "--teacher", "t.npz", "--out", "o"], "the teacher .npz given twice"),
    (["distill", "t.npz", "--teacher", "t.npz", "--out", "s.pt"], "the teacher .npz given twice"),
    (["teacher", "info", "t.npz", "--teacher", "t.npz"], "the teacher .npz given twice"),
    (["export", "--out", "o"], "missing the teacher .npz"),
    (["distill", "--out", "s.pt"], "missing the teacher .npz"),
    (["teacher", "info"], "missing the teacher .npz"),
    (["bench", "--sweep", "--embed-dim", "16", "--d", "16"], "--embed-dim and --d are one option"),
    (["bench", "b", "--student", "s.pt", "--checkpoint", "s.pt"], "--student and --checkpoint are one option"),
    (["bench", "--sweep", "--provider", "cpu", "--providers", "cpu"], "--provider and --providers are one option"),
])
def test_both_spellings_or_none_is_a_usage_error(runner, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    one_line_error(runner.invoke(app, args), 2, message)
    assert list(tmp_path.iterdir()) == []


def test_bench_old_spellings_still_work(runner):
    """--d and --providers set what --embed-dim and --provider set (d = 16, not the default 384; cpu only)."""
    r = runner.invoke(app, ["bench", "--sweep", "--n", "8", "--d", "16", "--providers", "cpu", "--batch", "1",
                            "--no-routed", "--quick", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["dim"] == 16 and {x["provider"] for x in doc["results"]} == {"cpu"}
    assert {x["variant"] for x in doc["results"]} == {"numpy", "ort", "ort_folded", "ort_int8"}, doc["results"]
