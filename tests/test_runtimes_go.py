"""Real Go build and tests against a bundle the CLI makes in this run (issue 5).

Skipped with the reason when go is missing, unless H2L_REQUIRE_RUNTIMES=1 (CI), where that fails.
"""

import base64
import os

import pytest

from conftest import GO, need, run_tool, tampered

pytestmark = [pytest.mark.runtimes, pytest.mark.slow]


@pytest.fixture(scope="module")
def h2l_go(rt_bundle, tmp_path_factory):
    """The h2l-go binary, built once (go run would turn every exit code into 1)."""
    go = need("go")
    exe = tmp_path_factory.mktemp("gobin") / "h2l-go"
    run_tool([go, "build", "-o", str(exe), "./cmd/h2l-go"], GO, rt_bundle)
    return str(exe)


def test_go_vet_test_and_cli(rt_bundle, rt_bundle_b, rt_routed_bundles, h2l_go, tmp_path):
    go = need("go")
    run_tool([go, "vet", "./..."], GO, rt_bundle)
    # -race with every bundle: the hot-reload load test (50 republishes A/B) and the routed tests run
    # instead of skipping. run_tool asserts go test's own exit status; -v only shows that nothing skipped.
    routed = os.pathsep.join(str(p) for p in rt_routed_bundles)
    p = run_tool([go, "test", "-race", "-v", "-count=1", "./..."], GO, rt_bundle,
                 H2L_BUNDLE_B=str(rt_bundle_b), H2L_BUNDLE_ROUTED=routed)
    assert "--- SKIP" not in p.stdout, p.stdout[-3000:]
    assert "--- PASS: TestHotReloadUnderLoad" in p.stdout and "--- PASS: TestRoutedGoldenAndBound" in p.stdout
    p = run_tool([h2l_go, str(rt_routed_bundles[0])], GO, rt_bundle)
    assert "routed.top_heads: max abs diff 0.000e+00 ok" in p.stdout and "FAIL" not in p.stdout
    p = run_tool([h2l_go, str(rt_bundle)], GO, rt_bundle)
    assert "student.projected_embedding: max abs diff" in p.stdout and "FAIL" not in p.stdout
    bad = run_tool([h2l_go, str(tampered(rt_bundle, tmp_path))], GO, rt_bundle, check=False)
    assert bad.returncode == 5 and "student.onnx fails its sha256 check" in bad.stderr


def test_go_public_key_refusal_exits_5(rt_bundle, h2l_go, tmp_path):
    # An ed25519 SubjectPublicKeyInfo is a fixed 12-byte DER prefix and the 32 key bytes.
    der = bytes.fromhex("302a300506032b6570032100") + bytes(range(32))
    key = tmp_path / "KEY.pub"
    key.write_text("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(der).decode() + "\n-----END PUBLIC KEY-----\n")
    p = run_tool([h2l_go, "--public-key", str(key), str(rt_bundle)], GO, rt_bundle, check=False)
    assert p.returncode == 5 and "not signed" in p.stderr, p.stderr


def test_go_fails_when_env_is_wrong(rt_bundle):
    go = need("go")
    p = run_tool([go, "test", "-count=1", "./..."], GO, rt_bundle, check=False, H2L_BUNDLE="/nonexistent")
    assert p.returncode != 0 and "has no manifest.json" in p.stdout
