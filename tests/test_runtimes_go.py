"""Real Go build and tests against a bundle the CLI makes in this run (issue 5).

Skipped with the reason when go is missing, unless H2L_REQUIRE_RUNTIMES=1 (CI), where that fails.
"""

import pytest

from conftest import GO, need, run_tool, tampered

pytestmark = [pytest.mark.runtimes, pytest.mark.slow]


def test_go_vet_test_and_cli(rt_bundle, tmp_path):
    go = need("go")
    run_tool([go, "vet", "./..."], GO, rt_bundle)
    p = run_tool([go, "test", "-v", "-count=1", "./..."], GO, rt_bundle)
    assert "--- SKIP" not in p.stdout and p.stdout.count("--- PASS") == 4
    p = run_tool([go, "run", "./cmd/h2l-go", str(rt_bundle)], GO, rt_bundle)
    assert "student.projected_embedding: max abs diff" in p.stdout and "FAIL" not in p.stdout
    bad = run_tool([go, "run", "./cmd/h2l-go", str(tampered(rt_bundle, tmp_path))], GO, rt_bundle, check=False)
    assert bad.returncode != 0 and "student.onnx fails its sha256 check" in bad.stderr


def test_go_fails_when_env_is_wrong(rt_bundle):
    go = need("go")
    p = run_tool([go, "test", "-count=1", "./..."], GO, rt_bundle, check=False, H2L_BUNDLE="/nonexistent")
    assert p.returncode != 0 and "has no manifest.json" in p.stdout
