"""UnifyWeaver databases as UnifyWeaver writes them, and the .npy layouts as its Go and Rust loaders read them.

``write_uw_db`` (conftest) follows ``LDAProjectionDB``: a relative db path stores head paths relative to the
trainer's working directory; a db copied elsewhere keeps stale absolute paths.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import DEMO_CACHE, DEMO_QA, write_uw_db
from h2l.cli import app
from h2l.errors import InputError
from h2l.importers.lda_db import import_lda_db
from h2l.importers.npy_dir import import_npy_dir
from h2l.importers.npz import load_npz, save_npz
from h2l.importers.qa import build_teacher, parse_qa_files
from h2l.model.teacher import make_teacher


def _check(t, cents, answers, ids):
    assert t.cluster_ids == tuple(str(i) for i in ids)
    np.testing.assert_allclose(t.centroids, cents, atol=1e-6)
    np.testing.assert_allclose(t.answers, answers, atol=1e-6)


def test_relative_db_path_from_the_trainers_cwd(tmp_path, monkeypatch, runner):
    trainer = tmp_path / "trainer"
    trainer.mkdir()
    monkeypatch.chdir(trainer)
    mh, cents, answers = write_uw_db("some/dir/lda.db", cluster_ids=(1, 2, 7))
    import sqlite3
    stored = sqlite3.connect(trainer / "some/dir/lda.db").execute(
        "SELECT centroid_path FROM cluster_heads ORDER BY cluster_id").fetchone()[0]
    assert stored == "some/dir/embeddings/mh_1_cluster_1_centroid.npy"  # relative to the trainer's cwd
    elsewhere = tmp_path / "user"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # h2l runs from another folder: the stored path is wrong from here
    _check(import_lda_db(trainer / "some/dir/lda.db", mh), cents, answers, (1, 2, 7))
    r = runner.invoke(app, ["teacher", "import", "--lda-db", str(trainer / "some/dir/lda.db"), "--out", "t.npz"])
    assert r.exit_code == 0, r.output
    _check(load_npz(elsewhere / "t.npz"), cents, answers, (1, 2, 7))


def test_relative_db_path_from_the_same_cwd_uses_the_stored_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mh, cents, answers = write_uw_db("some/dir/lda.db", cluster_ids=(3, 4))
    _check(import_lda_db("some/dir/lda.db", mh), cents, answers, (3, 4))


def test_copied_db_with_stale_absolute_paths(tmp_path):
    mh, cents, answers = write_uw_db(str(tmp_path / "machine_a" / "lda.db"), cluster_ids=(5, 9, 11))
    shutil.copytree(tmp_path / "machine_a", tmp_path / "machine_b")
    shutil.rmtree(tmp_path / "machine_a")  # the absolute paths stored in the db now point nowhere
    _check(import_lda_db(tmp_path / "machine_b" / "lda.db", mh), cents, answers, (5, 9, 11))


def test_missing_head_names_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mh, _, _ = write_uw_db("some/dir/lda.db", cluster_ids=(1, 2))
    (tmp_path / "some/dir/embeddings/mh_1_cluster_2_answer.npy").unlink()
    elsewhere = tmp_path / "x"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(InputError) as e:
        import_lda_db(tmp_path / "some/dir/lda.db", mh)
    msg = e.value.one_line()
    base = tmp_path / "some/dir"
    for place in ("some/dir/embeddings/mh_1_cluster_2_answer.npy",
                  str(base / "some/dir/embeddings/mh_1_cluster_2_answer.npy"),
                  str(base / "embeddings/mh_1_cluster_2_answer.npy")):
        assert place in msg, msg
    assert msg.startswith("head 2 answer")


# ------------------------------------------------------------------ npy export read as UnifyWeaver reads it

def _read_npy_like_go(path: Path) -> np.ndarray:
    """UnifyWeaver's Go loadNpyFloat32: magic, v1 header, shape from the header, then raw little-endian f4."""
    raw = path.read_bytes()
    assert raw[:6] == b"\x93NUMPY" and raw[6] == 1
    hlen = int.from_bytes(raw[8:10], "little")
    shape = [int(x) for x in re.findall(r"\d+", raw[10:10 + hlen].decode().split("'shape'")[1].split(")")[0])]
    return np.frombuffer(raw[10 + hlen:], "<f4", count=int(np.prod(shape)))


def _go_load(folder: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """projection.LoadMultiHead: glob centroid_*.npy, keep names that scan as centroid_%d.npy, pair answer_emb_%d."""
    heads = {}
    for p in sorted(folder.glob("centroid_*.npy")):
        m = re.fullmatch(r"centroid_(\d+)\.npy", p.name)
        if not m or not (folder / f"answer_emb_{m[1]}.npy").exists():
            continue
        heads[int(m[1])] = (_read_npy_like_go(p), _read_npy_like_go(folder / f"answer_emb_{m[1]}.npy"))
    return heads


def _rust_load(folder: Path, mh: int, max_id: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The Rust side: probe mh_{mh}_cluster_{i}_{centroid|answer}.npy for integer i."""
    heads = {}
    for i in range(0, max_id + 1):
        c, a = folder / f"mh_{mh}_cluster_{i}_centroid.npy", folder / f"mh_{mh}_cluster_{i}_answer.npy"
        if c.exists() and a.exists():
            heads[i] = (_read_npy_like_go(c), _read_npy_like_go(a))
    return heads


def _project(heads, q, tau):
    """UnifyWeaver's Project: softmax over cos(q, centroid)/τ, weighted sum of answers."""
    qn = q / np.linalg.norm(q)
    sims = np.array([qn @ (c / np.linalg.norm(c)) for c, _ in heads.values()], np.float64) / tau
    w = np.exp(sims - sims.max())
    w /= w.sum()
    return sum(wi * a for wi, (_, a) in zip(w, heads.values(), strict=True))


@pytest.fixture
def named_teacher():
    """A teacher built from Q-A text, as the demo builds it: cluster ids are names."""
    from h2l.importers.embed import cached_embedder, load_cache

    clusters = parse_qa_files([DEMO_QA])
    return build_teacher(clusters, cached_embedder(load_cache(DEMO_CACHE)), temperature=0.1, holdout_per_cluster=1)


def test_named_ids_are_numbered_with_a_mapping(tmp_path, runner, named_teacher):
    assert not all(c.isdigit() for c in named_teacher.cluster_ids)
    save_npz(named_teacher, tmp_path / "t.npz")
    out = tmp_path / "npy"
    r = runner.invoke(app, ["export", "--format", "npy", str(tmp_path / "t.npz"), "--out", str(out),
                            "--mh-id", "2"])
    assert r.exit_code == 0, r.output
    n = named_teacher.n_heads
    mapping = json.loads((out / "cluster_ids.json").read_text())
    assert mapping == {str(i + 1): cid for i, cid in enumerate(named_teacher.cluster_ids)}
    assert not list(out.glob("centroid_*[a-z]*.npy"))  # no file named after a cluster id
    go, rust = _go_load(out), _rust_load(out, 2, n)
    assert sorted(go) == sorted(rust) == list(range(1, n + 1))
    q = np.random.default_rng(0).standard_normal((5, named_teacher.dim)).astype(np.float32)
    ref, _ = named_teacher.project(q)
    for heads in (go, rust):
        for row, expect in zip(q, ref, strict=True):
            np.testing.assert_allclose(_project(heads, row, named_teacher.temperature), expect, atol=1e-5)
    for k, (c, a) in go.items():  # number k is the head of mapping[k]
        i = named_teacher.cluster_ids.index(mapping[str(k)])
        np.testing.assert_array_equal(c, named_teacher.centroids[i])
        np.testing.assert_array_equal(a, named_teacher.answers[i])
    back = import_npy_dir(out, named_teacher.temperature, mh_id=2)  # and h2l reads its names back
    assert back.cluster_ids == named_teacher.cluster_ids and back.fingerprint() == named_teacher.fingerprint()


def test_integer_ids_keep_their_numbers(tmp_path, runner):
    rng = np.random.default_rng(1)
    t = make_teacher(rng.standard_normal((3, 8)), rng.standard_normal((3, 8)), 0.2, ["4", "10", "12"])
    save_npz(t, tmp_path / "t.npz")
    out = tmp_path / "npy"
    assert runner.invoke(app, ["export", "--format", "npy", str(tmp_path / "t.npz"),
                               "--out", str(out)]).exit_code == 0
    assert not (out / "cluster_ids.json").exists()
    assert sorted(_go_load(out)) == sorted(_rust_load(out, 1, 12)) == [4, 10, 12]
    q = rng.standard_normal(8)
    np.testing.assert_allclose(_project(_go_load(out), q, 0.2), t.project(q)[0][0], atol=1e-5)


def test_lda_db_export_npy_matches_unifyweavers_projection(tmp_path, monkeypatch, runner):
    """The round trip a UnifyWeaver user makes: their lda.db → h2l → their Go loader."""
    monkeypatch.chdir(tmp_path)
    mh, cents, answers = write_uw_db("data/lda.db", cluster_ids=(1, 2, 3, 8), d=16, tau=0.1)
    assert runner.invoke(app, ["teacher", "import", "--lda-db", "data/lda.db", "--out", "t.npz"]).exit_code == 0
    assert runner.invoke(app, ["export", "--format", "npy", "t.npz", "--out", "npy"]).exit_code == 0
    q = np.random.default_rng(2).standard_normal(16)
    original = {cid: (c, a) for cid, c, a in zip((1, 2, 3, 8), cents, answers, strict=True)}
    np.testing.assert_allclose(_project(_go_load(tmp_path / "npy"), q, 0.1), _project(original, q, 0.1), atol=1e-6)
