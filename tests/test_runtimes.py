"""Real cargo and go builds against a bundle the CLI makes in this run (issue 5).

Skipped with the reason when cargo or go is missing, unless H2L_REQUIRE_RUNTIMES=1 (CI), where that fails.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from h2l.cli import app
from h2l.runtime import library_path

from conftest import REPO

pytestmark = [pytest.mark.runtimes, pytest.mark.slow]
RUST, GO = REPO / "runtimes" / "rust", REPO / "runtimes" / "go"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("H2L_REQUIRE_RUNTIMES") == "1":
            pytest.fail(f"{tool} is required (H2L_REQUIRE_RUNTIMES=1) but not on PATH")
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from typer.testing import CliRunner

    from h2l.synthetic import synthetic_teacher
    from h2l.teacher import save_npz

    root = tmp_path_factory.mktemp("rt")
    save_npz(synthetic_teacher(10, 48, queries_per_head=3, heldout_per_head=1, seed=5), root / "t.npz")
    r = CliRunner()
    res = r.invoke(app, ["distill", str(root / "t.npz"), "--out", str(root / "s.pt"), "--steps", "150",
                         "--batch-size", "256", "--ff-dim", "64", "--quiet"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["export", "--teacher", str(root / "t.npz"), "--student", str(root / "s.pt"),
                         "--out", str(root / "bundle"), "--min-cosine", "0.9"])
    assert res.exit_code == 0, res.output
    return root / "bundle"


def run(cmd, cwd, bundle, check=True, **env):
    e = {**os.environ, "H2L_BUNDLE": str(bundle), "ORT_DYLIB_PATH": library_path(), **env}
    p = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=1200)
    if check:
        assert p.returncode == 0, f"{cmd} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def tampered(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    p = copy / "student.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 3] ^= 0x40
    p.write_bytes(bytes(data))
    return copy


def test_rust_cargo_test_and_cli(bundle, tmp_path):
    cargo = need("cargo")
    p = run([cargo, "test", "--release", "--", "--nocapture"], RUST, bundle)
    assert "6 passed" in p.stdout and "skipped" not in p.stderr
    p = run([cargo, "run", "--release", "-q", "--bin", "h2l-rs", "--", str(bundle)], RUST, bundle)
    assert "student.projected_embedding: max abs diff" in p.stdout and "FAIL" not in p.stdout
    bad = run([cargo, "run", "--release", "-q", "--bin", "h2l-rs", "--", str(tampered(bundle, tmp_path))], RUST,
              bundle, check=False)
    assert bad.returncode != 0 and "student.onnx fails its sha256 check" in bad.stderr


def test_rust_fails_when_env_is_wrong(bundle):
    cargo = need("cargo")
    p = run([cargo, "test", "--release", "golden"], RUST, bundle, check=False, ORT_DYLIB_PATH="/nonexistent/lib.so")
    assert p.returncode != 0 and "is not a file" in p.stdout + p.stderr


def test_go_vet_test_and_cli(bundle, tmp_path):
    go = need("go")
    run([go, "vet", "./..."], GO, bundle)
    p = run([go, "test", "-v", "-count=1", "./..."], GO, bundle)
    assert "--- SKIP" not in p.stdout and p.stdout.count("--- PASS") == 4
    p = run([go, "run", "./cmd/h2l-go", str(bundle)], GO, bundle)
    assert "student.projected_embedding: max abs diff" in p.stdout and "FAIL" not in p.stdout
    bad = run([go, "run", "./cmd/h2l-go", str(tampered(bundle, tmp_path))], GO, bundle, check=False)
    assert bad.returncode != 0 and "student.onnx fails its sha256 check" in bad.stderr


def test_go_fails_when_env_is_wrong(bundle):
    go = need("go")
    p = run([go, "test", "-count=1", "./..."], GO, bundle, check=False, H2L_BUNDLE="/nonexistent")
    assert p.returncode != 0 and "has no manifest.json" in p.stdout
