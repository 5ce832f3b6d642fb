"""On the shared UnifyWeaver data: teacher build → distill → export → verify --queries (Q-A JSON)."""

import json

import pytest

from h2l.cli import app
from h2l.importers import embed

pytestmark = [pytest.mark.slow, pytest.mark.embed,
              pytest.mark.skipif(not embed.available()[0], reason=embed.available()[1])]


def test_text_to_verified_bundle(tmp_path, runner, shared_qa_files):
    args = ["teacher", "build", "--out", str(tmp_path / "uw.npz")]
    for f in shared_qa_files:
        args += ["--qa", str(f)]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, ["distill", str(tmp_path / "uw.npz"), "--out", str(tmp_path / "s.pt"), "--steps", "250",
                            "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    held = json.loads(r.stdout)["final"]["heldout"]
    assert held["n"] == 60 and held["mean_cosine"] > 0.99
    r = runner.invoke(app, ["export", str(tmp_path / "uw.npz"), "--student", str(tmp_path / "s.pt"),
                            "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu", "--queries", str(shared_qa_files[0]),
                            "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    user = doc["summary"]["cpu"]["user"]
    assert user["n"] == 5 * 8 and user["mean_cosine"] > 0.98
    recall = doc["summary"]["cpu"]["recall_at_1"]
    assert set(recall) == {"teacher", "student"} and 0 < recall["teacher"] <= 1


def test_queries_for_unknown_cluster_are_refused(tmp_path, runner, shared_qa_files):
    args = ["teacher", "build", "--out", str(tmp_path / "one.npz"), "--qa", str(shared_qa_files[0])]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, ["export", str(tmp_path / "one.npz"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 0
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--queries", str(shared_qa_files[1])])
    assert r.exit_code == 3 and "is not one of the teacher's clusters" in r.stderr
