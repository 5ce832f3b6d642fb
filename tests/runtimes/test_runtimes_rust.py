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
    skipped = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("skipped")]
    assert all("has no encoder" in ln for ln in skipped), \
        f"Rust tests skipped although their bundles were given: {skipped}"
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
    p = run_tool([cargo, "test", "--release", "golden"], RUST, rt_bundle, check=False,
                 ORT_DYLIB_PATH="/nonexistent/lib.so")
    assert p.returncode != 0 and "is not a file" in p.stdout + p.stderr


def test_rust_text_and_ask_agree_with_python(rt_bundle, rt_text_bundle):
    """Issue 13: Rust token ids, embeddings and top clusters vs the golden texts, and h2l-rs ask vs h2l ask."""
    from h2l.ask import open_asker

    cargo = need("cargo")
    p = run_tool([cargo, "test", "--release", "--test", "text", "--", "--nocapture"], RUST, rt_bundle,
                 H2L_BUNDLE_TEXT=str(rt_text_bundle))
    assert "skipped" not in p.stdout + p.stderr
    texts = ["My brakes squeal when I stop, what should I do?", "Wie pumpe ich den Reifen auf?",
             "chain fell off 🚲 again!!", "how tight should the headset be " * 40]
    want = open_asker(rt_text_bundle).ask(texts)
    p = run_tool([cargo, "run", "--release", "-q", "--bin", "h2l-rs", "--", "ask", str(rt_text_bundle), *texts],
                 RUST, rt_bundle)
    got = [json.loads(line) for line in p.stdout.splitlines()]
    assert [g["text"] for g in got] == texts
    for g, w in zip(got, want, strict=True):
        assert (g["top_cluster"], g["answer"], g["truncated"]) == (w["top_cluster"], w["answer"], w["truncated"])
        assert abs(g["top_weight"] - w["top_weight"]) <= 1e-5
        assert max(abs(a - b) for a, b in zip(g["embedding"], w["embedding"], strict=True)) <= 1e-5
    assert got[-1]["truncated"] is True


def test_rust_verifies_python_signatures(rt_bundle, tmp_path):
    """Issue 15 across languages: h2l-rs --public-key accepts what h2l sign wrote, and refuses (exit 5)."""
    import shutil

    from h2l.bundle import publish, signing

    cargo = need("cargo")
    bundle = tmp_path / "signed"
    shutil.copytree(rt_bundle, bundle)
    signing.keygen(tmp_path / "key")
    signing.keygen(tmp_path / "other")
    publish.sign_bundle(bundle, tmp_path / "key")
    h2l_rs = [cargo, "run", "--release", "-q", "--bin", "h2l-rs", "--", "--public-key"]
    ok = run_tool([*h2l_rs, str(tmp_path / "key.pub"), str(bundle)], RUST, rt_bundle)
    assert json.loads(ok.stdout.splitlines()[0])["signed_by"] == publish.sign_bundle(bundle, tmp_path / "key")
    other = run_tool([*h2l_rs, str(tmp_path / "other.pub"), str(bundle)], RUST, rt_bundle, check=False)
    assert other.returncode == 5 and "signed by key" in other.stderr
    (bundle / "manifest.json").write_bytes((bundle / "manifest.json").read_bytes() + b" ")
    changed = run_tool([*h2l_rs, str(tmp_path / "key.pub"), str(bundle)], RUST, rt_bundle, check=False)
    assert changed.returncode == 5 and "manifest changed after signing" in changed.stderr
