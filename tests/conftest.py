"""Shared fixtures: small real teachers, a CLI runner, the shared UnifyWeaver data by path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from h2l.synthetic import synthetic_teacher
from h2l.teacher import save_npz

REPO = Path(__file__).resolve().parents[1]
SHARED_QA = Path(os.environ.get("H2L_SHARED_DATA", REPO.parent / "shared" / "data" / "unifyweaver-qa"))
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


def rehash(bundle: Path, rel: str) -> None:
    """Update the manifest's sha256/size for ``rel``, so only a content check can catch a change."""
    m = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / rel).read_bytes()
    for e in m["files"]:
        if e["path"] == rel:
            e["sha256"], e["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (bundle / "manifest.json").write_text(json.dumps(m))
