"""Signed bundles (issue 15): keys, signing at export and after, and the three refusals with a key pinned.

Refusals are checked twice: from the CLI (exit 5, one line) and from the Python open path
(``open_bundle(..., public_key=...)`` raises IntegrityError).  Rust and Go test the same format in
runtimes/.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from conftest import listing, one_line_error, rehash
from h2l import atomic
from h2l.bundle.reader import open_bundle
from h2l.bundle.signing import key_id, load_private_key, load_public_key, signature_bytes
from h2l.cli import app
from h2l.errors import IntegrityError
from h2l.export import export_onnx
from hostile import keypair, signed_copy

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return keypair(d, "key"), keypair(d, "other")


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys):
    """A bundle published with --sign-key (N = 12, d = 32, teacher only)."""
    from h2l.model.synthetic import synthetic_teacher

    out = tmp_path_factory.mktemp("signed") / "b"
    export_onnx(synthetic_teacher(12, 32, queries_per_head=4, heldout_per_head=2, seed=3), out, sign_key=keys[0][0])
    return out


def copy(signed, tmp_path, name="b"):
    import shutil

    shutil.copytree(signed, tmp_path / name)
    return tmp_path / name


# ------------------------------------------------------------------ keys

def test_keygen_writes_a_private_0600_key_and_its_public_half(tmp_path, runner):
    r = runner.invoke(app, ["keygen", "--out", str(tmp_path / "k")])
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    priv = (tmp_path / "k").read_bytes()
    pub = (tmp_path / "k.pub").read_bytes()
    assert priv.startswith(b"-----BEGIN PRIVATE KEY-----") and pub.startswith(b"-----BEGIN PUBLIC KEY-----")
    raw = load_public_key(tmp_path / "k.pub").public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert hashlib.sha256(raw).hexdigest() in r.stdout
    assert key_id(load_private_key(tmp_path / "k").public_key()) == hashlib.sha256(raw).hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["k", "k.pub"]  # no temp files left


def test_keygen_refuses_to_overwrite_without_force(tmp_path, runner):
    assert runner.invoke(app, ["keygen", "--out", str(tmp_path / "k")]).exit_code == 0
    before = (tmp_path / "k").read_bytes(), (tmp_path / "k.pub").read_bytes()
    one_line_error(runner.invoke(app, ["keygen", "--out", str(tmp_path / "k")]), 4, "already exists", "--force")
    assert ((tmp_path / "k").read_bytes(), (tmp_path / "k.pub").read_bytes()) == before
    (tmp_path / "k").unlink()  # a lone KEY.pub is refused too: it would pin a key nobody holds
    one_line_error(runner.invoke(app, ["keygen", "--out", str(tmp_path / "k")]), 4, "k.pub already exists")
    assert runner.invoke(app, ["keygen", "--out", str(tmp_path / "k"), "--force"]).exit_code == 0
    assert (tmp_path / "k.pub").read_bytes() != before[1]
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def _pair_matches(k) -> bool:
    return key_id(load_private_key(k).public_key()) == key_id(load_public_key(f"{k}.pub"))


def test_keygen_force_failing_at_the_second_rename_keeps_the_old_pair(tmp_path, runner, monkeypatch):
    """Issue 20, item 11: the new pair is written to temp names first; a rename that fails puts the old
    private key back, so a failed --force never leaves no key (it used to delete the new one, the old
    one already overwritten)."""
    k = tmp_path / "k"
    assert runner.invoke(app, ["keygen", "--out", str(k)]).exit_code == 0
    before = k.read_bytes(), (tmp_path / "k.pub").read_bytes()
    real = os.replace

    def replace(src, dst, *a, **kw):
        if str(dst) == f"{k}.pub":
            raise OSError(28, "No space left on device (injected)")
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(os, "replace", replace)
    one_line_error(runner.invoke(app, ["keygen", "--out", str(k), "--force"]), 4, "No space left",
                   "none of them was replaced")
    assert (k.read_bytes(), (tmp_path / "k.pub").read_bytes()) == before
    assert _pair_matches(k) and stat.S_IMODE(k.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["k", "k.pub"]  # no temp or aside files left


_KILLED_KEYGEN = """
import os, signal, sys
from h2l.bundle.signing import keygen
real = os.replace
def replace(src, dst, *a, **kw):
    if str(dst) == sys.argv[1] + ".pub":
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)
os.replace = replace
keygen(sys.argv[1], force=True)
"""


def test_keygen_force_killed_between_the_renames_leaves_a_private_key(tmp_path, runner):
    """SIGKILL between the two renames: the new private key is in place (the old KEY.pub beside it), and
    the next keygen cleans what the killed one left."""
    import subprocess
    import sys

    from conftest import REPO

    k = tmp_path / "k"
    assert runner.invoke(app, ["keygen", "--out", str(k)]).exit_code == 0
    old_private = k.read_bytes()
    p = subprocess.run([sys.executable, "-c", _KILLED_KEYGEN, str(k)], capture_output=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert p.returncode == -9, p.stderr.decode()
    assert k.read_bytes() != old_private and load_private_key(k) and stat.S_IMODE(k.stat().st_mode) == 0o600
    assert load_public_key(f"{k}.pub")
    assert runner.invoke(app, ["keygen", "--out", str(k), "--force"]).exit_code == 0
    assert _pair_matches(k) and sorted(os.listdir(tmp_path)) == ["k", "k.pub"]


@pytest.mark.parametrize("which, needle", [("pub_as_private", "is a public key"), ("garbage", "not a PEM private key"),
                                           ("missing", "cannot be read")])
def test_bad_signing_key_is_refused_before_anything_is_written(tmp_path, runner, teacher_npz, keys, which, needle):
    key = {"pub_as_private": keys[0][1], "missing": tmp_path / "nope"}.get(which, tmp_path / "garbage")
    (tmp_path / "garbage").write_text("not a key")
    before = listing(tmp_path)
    r = runner.invoke(app, ["export", str(teacher_npz), "--out", str(tmp_path / "b"),
                            "--sign-key", str(key)])
    one_line_error(r, 3, needle)
    assert listing(tmp_path) == before


def test_npy_export_cannot_be_signed(tmp_path, runner, teacher_npz, keys):
    r = runner.invoke(app, ["export", "--format", "npy", str(teacher_npz), "--out", str(tmp_path / "n"),
                            "--sign-key", str(keys[0][0])])
    one_line_error(r, 2, "--format npy writes the teacher's vectors only; --sign-key does not apply")
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("which, needle", [("private_as_public", "is a private key"),
                                           ("garbage", "not a PEM public key"), ("missing", "cannot be read")])
def test_bad_public_key_is_an_input_error(tmp_path, runner, signed, keys, which, needle):
    key = {"private_as_public": keys[0][0], "missing": tmp_path / "nope"}.get(which, tmp_path / "garbage")
    (tmp_path / "garbage").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    one_line_error(runner.invoke(app, ["verify", str(signed), "--public-key", str(key), "--provider", "cpu"]), 3,
                   needle)


# ------------------------------------------------------------------ signing and opening

def test_signature_file_has_the_contract_format(signed, keys):
    sig = json.loads((signed / "manifest.sig").read_text())
    assert set(sig) == {"format", "version", "algorithm", "key_id", "signature"}
    assert (sig["format"], sig["version"], sig["algorithm"]) == ("h2l-signature", 1, "ed25519")
    pub = load_public_key(keys[0][1])
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert sig["key_id"] == hashlib.sha256(raw).hexdigest()
    blob = base64.b64decode(sig["signature"], validate=True)
    assert len(blob) == 64
    pub.verify(blob, (signed / "manifest.json").read_bytes())  # independent check with cryptography itself
    assert "manifest.sig" not in {e["path"] for e in json.loads((signed / "manifest.json").read_text())["files"]}


def test_signed_bundle_opens_with_path_or_bytes(signed, keys, runner):
    pub = keys[0][1]
    kid = key_id(load_public_key(pub))
    assert open_bundle(signed, public_key=pub).key_id == kid
    assert open_bundle(signed, public_key=str(pub)).key_id == kid
    assert open_bundle(signed, public_key=pub.read_bytes()).key_id == kid
    assert open_bundle(signed).key_id is None  # no key pinned: the signature is not consulted
    r = runner.invoke(app, ["verify", str(signed), "--public-key", str(pub), "--provider", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["passed"] is True  # stdout stays JSON; the signature line goes to stderr
    assert f"signature: valid, key id {kid}" in r.stderr


def test_same_inputs_same_signature(tmp_path, small_teacher, keys, signed):
    export_onnx(small_teacher, tmp_path / "again", sign_key=keys[0][0])
    for f in ("manifest.json", "manifest.sig"):
        assert (tmp_path / "again" / f).read_bytes() == (signed / f).read_bytes()


def test_sign_command_signs_an_unsigned_bundle(tmp_path, signed, keys, runner):
    b = copy(signed, tmp_path)
    (b / "manifest.sig").unlink()
    r = runner.invoke(app, ["sign", str(b), "--key", str(keys[0][0])])
    assert r.exit_code == 0, r.output
    assert (b / "manifest.sig").read_bytes() == (signed / "manifest.sig").read_bytes()
    assert not [p for p in os.listdir(b) if p.startswith(".")]  # atomic write left no temp file
    assert open_bundle(b, public_key=keys[0][1]).key_id == key_id(load_public_key(keys[0][1]))


def test_sign_command_refuses_a_corrupt_bundle(tmp_path, signed, keys, runner):
    b = copy(signed, tmp_path)
    (b / "manifest.sig").unlink()
    p = b / "teacher.onnx"
    data = bytearray(p.read_bytes())
    data[50] ^= 1
    p.write_bytes(bytes(data))
    one_line_error(runner.invoke(app, ["sign", str(b), "--key", str(keys[0][0])]), 5, "fails its sha256 check")
    assert not (b / "manifest.sig").exists()


# ------------------------------------------------------------------ the three refusals

def _refused(runner, b, pub, *needles):
    with pytest.raises(IntegrityError) as exc:
        open_bundle(b, public_key=pub)
    for n in needles:
        assert n in exc.value.one_line()
    r = runner.invoke(app, ["verify", str(b), "--public-key", str(pub), "--provider", "cpu"])
    return one_line_error(r, 5, *needles)


def test_missing_signature_is_refused(tmp_path, signed, keys, runner):
    b = copy(signed, tmp_path)
    (b / "manifest.sig").unlink()
    _refused(runner, b, keys[0][1], "no manifest.sig (unsigned bundle)")
    assert runner.invoke(app, ["verify", str(b), "--provider", "cpu"]).exit_code == 0  # unsigned is fine unpinned


def test_signature_by_another_key_is_refused(tmp_path, signed, keys, runner):
    b = copy(signed, tmp_path)
    _refused(runner, b, keys[1][1], "signed by another key")
    b2 = signed_copy(signed, tmp_path / "b2", keys[1][0])  # a complete, consistent bundle signed by someone else
    _refused(runner, b2, keys[0][1], "signed by another key")


def test_signature_claiming_the_pinned_key_id_but_made_by_another_key_is_refused(tmp_path, signed, keys, runner):
    b = copy(signed, tmp_path)
    forged = json.loads(signature_bytes((b / "manifest.json").read_bytes(), load_private_key(keys[1][0])))
    forged["key_id"] = key_id(load_public_key(keys[0][1]))
    (b / "manifest.sig").write_text(json.dumps(forged))
    _refused(runner, b, keys[0][1], "does not verify with the pinned key")


def test_manifest_changed_after_signing_is_refused(tmp_path, signed, keys, runner):
    b = copy(signed, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    m["name"] = "someone-else"
    (b / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    _refused(runner, b, keys[0][1], "changed after signing")


def test_model_swapped_and_rehashed_after_signing_is_refused(tmp_path, signed, keys, runner):
    """The attack the issue describes: rewrite a model, re-hash the manifest to match."""
    b = copy(signed, tmp_path)
    p = b / "teacher.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    rehash(b, "teacher.onnx")
    assert open_bundle(b).key_id is None  # unpinned, the re-hashed bundle opens: only the signature can tell
    _refused(runner, b, keys[0][1], "changed after signing")


@pytest.mark.parametrize("sig, needle", [
    (b"not json", "manifest.sig is not valid JSON"),
    (b"[]", "not an h2l-signature v1 ed25519 signature"),
    (None, "not an h2l-signature v1 ed25519 signature"),  # algorithm changed
    (b"short", "malformed signature"),
    (b"x" * 5000, "over the 4,096-byte limit"),
])
def test_malformed_signature_is_refused(tmp_path, signed, keys, runner, sig, needle):
    b = copy(signed, tmp_path)
    doc = json.loads((b / "manifest.sig").read_text())
    if sig is None:
        doc["algorithm"] = "rsa"
        sig = json.dumps(doc).encode()
    elif sig == b"short":
        doc["signature"] = base64.b64encode(b"\0" * 63).decode()
        sig = json.dumps(doc).encode()
    (b / "manifest.sig").write_bytes(sig)
    _refused(runner, b, keys[0][1], needle)


def test_symlinked_signature_is_refused(tmp_path, signed, keys, runner):
    b = copy(signed, tmp_path)
    (b / "manifest.sig").rename(tmp_path / "outside.sig")
    (b / "manifest.sig").symlink_to(tmp_path / "outside.sig")
    _refused(runner, b, keys[0][1], "manifest.sig is a symlink")


# ------------------------------------------------------------------ export --sign-key: never visible unsigned

def test_export_publishes_the_folder_already_signed(tmp_path, small_teacher, keys, monkeypatch):
    out = (tmp_path / "b").absolute()
    seen = []
    real_replace = os.replace

    real_rename_new = atomic.rename_new

    def spy(src, dst, real=real_replace):
        if os.fspath(dst) == os.fspath(out):
            seen.append(sorted(os.listdir(src)))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    monkeypatch.setattr(atomic, "rename_new", lambda src, dst: spy(src, dst, real_rename_new))  # no --force
    export_onnx(small_teacher, out, sign_key=keys[0][0])
    assert len(seen) == 1 and "manifest.sig" in seen[0] and "manifest.json" in seen[0]
    assert open_bundle(out, public_key=keys[0][1]).key_id


def test_signing_failure_leaves_no_bundle(tmp_path, small_teacher, keys, monkeypatch):
    import h2l.export

    def broken(*a, **k):
        raise OSError("injected: signing failed")

    monkeypatch.setattr(h2l.export, "signature_bytes", broken)
    with pytest.raises(OSError, match="injected"):
        export_onnx(small_teacher, tmp_path / "b", sign_key=keys[0][0])
    assert listing(tmp_path) == []  # no bundle, no staging folder


def test_signing_failure_on_force_keeps_the_old_signed_bundle(tmp_path, signed, small_teacher, keys, monkeypatch):
    import h2l.export

    b = copy(signed, tmp_path)
    before = {p: (b / p).read_bytes() for p in ("manifest.json", "manifest.sig")}
    monkeypatch.setattr(h2l.export, "signature_bytes", lambda *a, **k: (_ for _ in ()).throw(OSError("injected")))
    with pytest.raises(OSError):
        export_onnx(small_teacher, b, sign_key=keys[0][0], force=True, seed=1)
    assert {p: (b / p).read_bytes() for p in before} == before
    assert sorted(os.listdir(tmp_path)) == ["b"]
    assert open_bundle(b, public_key=keys[0][1]).key_id


def test_ask_and_verify_queries_refuse_an_unpinned_bundle_first(tmp_path, runner, signed, keys):
    """--public-key is checked before anything else: ask, and verify --queries (before embedding them)."""
    r = runner.invoke(app, ["ask", str(signed), "how do I fix it?", "--public-key", str(keys[1][1])])
    assert r.exit_code == 5, r.output
    assert "signed by another key" in r.stderr
    qa = tmp_path / "q.json"
    qa.write_text('{"clusters": []}')  # never read: the signature is refused first
    r = runner.invoke(app, ["verify", str(signed), "--queries", str(qa), "--public-key", str(keys[1][1])])
    assert r.exit_code == 5, r.output
    assert "signed by another key" in r.stderr
