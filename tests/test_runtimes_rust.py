"""Real Rust build and tests against bundles the CLI makes in this run (issues 5, 14, 15).

Skipped with the reason when cargo is missing, unless H2L_REQUIRE_RUNTIMES=1 (CI), where that fails.
The runner's exit status decides; no pass counts are parsed.
"""

import json

import pytest

from conftest import RUST, need, run_tool, tampered

pytestmark = [pytest.mark.runtimes, pytest.mark.slow]


def test_rust_cargo_test_and_cli(rt_bundle, rt_bundle_b, rt_bundle_routed, tmp_path):
    cargo = need("cargo")
    p = run_tool([cargo, "test", "--release", "--", "--nocapture"], RUST, rt_bundle, H2L_BUNDLE_B=str(rt_bundle_b),
                 H2L_BUNDLE_ROUTED=str(rt_bundle_routed))
    assert "skipped" not in p.stdout + p.stderr, "a Rust test skipped although both bundles were given"
    h2l_rs = [cargo, "run", "--release", "-q", "--bin", "h2l-rs", "--"]
    p = run_tool([*h2l_rs, str(rt_bundle)], RUST, rt_bundle)
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    checks = [c for c in lines if "pass" in c]
    assert lines[0]["n_heads"] == 10 and {(c["model"], c["output"]) for c in checks} >= {
        ("teacher", "projected_embedding"), ("student", "projected_embedding")}
    assert all(c["pass"] for c in checks)
    p = run_tool([*h2l_rs, str(rt_bundle_routed)], RUST, rt_bundle)
    routed = [json.loads(line) for line in p.stdout.splitlines() if '"routed"' in line]
    assert {c["output"] for c in routed} == {"projected_embedding", "top_heads", "top_weights", "neglected_mass_bound"}
    assert all(c["pass"] for c in routed)
    bad = run_tool([*h2l_rs, str(tampered(rt_bundle, tmp_path))], RUST, rt_bundle, check=False)
    assert bad.returncode == 5 and "student.onnx fails its sha256 check" in bad.stderr
    usage = run_tool([*h2l_rs, "--bench"], RUST, rt_bundle, check=False)
    assert usage.returncode == 2 and usage.stderr.startswith("error: ")


def test_rust_fails_when_env_is_wrong(rt_bundle):
    cargo = need("cargo")
    p = run_tool([cargo, "test", "--release", "golden"], RUST, rt_bundle, check=False, ORT_DYLIB_PATH="/nonexistent/lib.so")
    assert p.returncode != 0 and "is not a file" in p.stdout + p.stderr
