"""Real Go build and tests against a bundle the CLI makes in this run (issue 5).

Skipped with the reason when go is missing, unless H2L_REQUIRE_RUNTIMES=1 (CI), where that fails.
"""

import base64
import os
import re

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
    # instead of skipping. run_tool asserts go test's own exit status; -v shows what skipped.
    routed = os.pathsep.join(str(p) for p in rt_routed_bundles)
    p = run_tool([go, "test", "-race", "-v", "-count=1", "./..."], GO, rt_bundle,
                 H2L_BUNDLE_B=str(rt_bundle_b), H2L_BUNDLE_ROUTED=routed)
    # Only the encoder tests may skip here (they run on rt_text_bundle in the text test below).
    skipped = re.findall(r"--- SKIP: (\S+)", p.stdout)
    assert all(name.startswith(("TestText", "TestEmbedText")) for name in skipped), skipped
    assert "--- PASS: TestHotReloadUnderLoad" in p.stdout and "--- PASS: TestRoutedGoldenAndBound" in p.stdout
    p = run_tool([h2l_go, str(rt_routed_bundles[0])], GO, rt_bundle)
    assert "routed.top_heads: max abs diff 0.000e+00 ok" in p.stdout and "FAIL" not in p.stdout
    p = run_tool([h2l_go, str(rt_bundle)], GO, rt_bundle)
    assert "student.projected_embedding: max abs diff" in p.stdout and "FAIL" not in p.stdout
    bad = run_tool([h2l_go, str(tampered(rt_bundle, tmp_path))], GO, rt_bundle, check=False)
    assert bad.returncode == 5 and "student.onnx fails its sha256 check" in bad.stderr


HELD_OUT = ["Why does my chain skip when I pedal hard?", "How should I store my bike over the winter?",
            "Café au lait spilled on my brake rotors, what now?", "自行车链条怎么清洗？"]


def test_go_text_tests_and_ask_agree_with_python(rt_bundle, rt_text_bundle, h2l_go):
    """Go's tokenizer + encoder against golden ids/embeddings/top clusters, then h2l-go ask vs Python's ask."""
    import json

    import numpy as np

    from h2l.ask import open_asker

    go = need("go")
    p = run_tool([go, "test", "-race", "-v", "-count=1", "-run", "Text|Encoder|Ask", "."], GO, rt_bundle,
                 H2L_BUNDLE_TEXT=str(rt_text_bundle))
    assert "--- SKIP" not in p.stdout, p.stdout[-3000:]
    assert "--- PASS: TestTextGoldenIdsEmbeddingsAndTopCluster" in p.stdout
    p = run_tool([h2l_go, "ask", str(rt_text_bundle), *HELD_OUT], GO, rt_bundle)
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    want = open_asker(rt_text_bundle).ask(HELD_OUT)
    assert len(lines) == len(want) == len(HELD_OUT)
    for got, ref in zip(lines, want, strict=True):
        assert list(got) == ["text", "top_cluster", "top_weight", "answer", "embedding", "truncated"]
        assert (got["text"], got["top_cluster"], got["answer"], got["truncated"]) == \
            (ref["text"], ref["top_cluster"], ref["answer"], ref["truncated"])
        assert np.max(np.abs(np.array(got["embedding"]) - np.array(ref["embedding"]))) <= 1e-5
        assert abs(got["top_weight"] - ref["top_weight"]) <= 1e-5
    p = run_tool([h2l_go, "ask", "--no-embedding", str(rt_text_bundle), ""], GO, rt_bundle, check=False)
    assert p.returncode == 3 and p.stdout == "" and "empty" in p.stderr
    p = run_tool([h2l_go, "ask", str(rt_bundle), "hello"], GO, rt_bundle, check=False)
    assert p.returncode == 3 and "no encoder" in p.stderr


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
