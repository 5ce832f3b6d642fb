"""Real Rust build and tests against a bundle the CLI makes in this run (issue 5).

Skipped with the reason when cargo is missing, unless H2L_REQUIRE_RUNTIMES=1 (CI), where that fails.
"""

import pytest

from conftest import RUST, need, run_tool, tampered

pytestmark = [pytest.mark.runtimes, pytest.mark.slow]


def test_rust_cargo_test_and_cli(rt_bundle, tmp_path):
    cargo = need("cargo")
    p = run_tool([cargo, "test", "--release", "--", "--nocapture"], RUST, rt_bundle)
    assert "6 passed" in p.stdout and "skipped" not in p.stderr
    p = run_tool([cargo, "run", "--release", "-q", "--bin", "h2l-rs", "--", str(rt_bundle)], RUST, rt_bundle)
    assert "student.projected_embedding: max abs diff" in p.stdout and "FAIL" not in p.stdout
    bad = run_tool([cargo, "run", "--release", "-q", "--bin", "h2l-rs", "--", str(tampered(rt_bundle, tmp_path))],
                   RUST, rt_bundle, check=False)
    assert bad.returncode != 0 and "student.onnx fails its sha256 check" in bad.stderr


def test_rust_fails_when_env_is_wrong(rt_bundle):
    cargo = need("cargo")
    p = run_tool([cargo, "test", "--release", "golden"], RUST, rt_bundle, check=False, ORT_DYLIB_PATH="/nonexistent/lib.so")
    assert p.returncode != 0 and "is not a file" in p.stdout + p.stderr
