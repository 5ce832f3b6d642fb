"""Ed25519 signatures over manifest.json: a service loads only what its owner published.

The manifest lists every file's sha256, so one signature over its exact bytes
covers the whole bundle.  ``manifest.sig`` sits beside it (never listed in
``files``) and holds::

    {"format": "h2l-signature", "version": 1, "algorithm": "ed25519",
     "key_id": "<sha256 hex of the 32 raw public-key bytes>",
     "signature": "<standard base64 of the 64-byte signature over manifest.json's bytes>"}

Keys: ``KEY`` is PEM PKCS8 (unencrypted, mode 0600), ``KEY.pub`` PEM
SubjectPublicKeyInfo.  Rust and Go read the same files.  With a public key
pinned there is no unsigned fallback: a missing, foreign or stale signature is
an :class:`IntegrityError` (exit 5).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..atomic import check_output_file, write_files_atomic
from ..errors import InputError, IntegrityError
from .folder import Folder
from .guards import MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, parse_json
from .layout import MANIFEST, SIGNATURE, json_bytes

FORMAT, VERSION, ALGORITHM = "h2l-signature", 1, "ed25519"
_PUBLISH = "publish it with `h2l export --sign-key KEY` or sign it with `h2l sign DIR --key KEY`"

PublicKeyLike = str | Path | bytes | Ed25519PublicKey


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 hex of the 32 raw public-key bytes: the fingerprint manifest.sig names."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_path(key: str | Path) -> Path:
    return Path(f"{key}.pub")


def keygen(out: str | Path, force: bool = False) -> str:
    """Write a new key pair: ``out`` (PKCS8 PEM, 0600 from its first byte) and ``out.pub``; returns the key id.

    With ``force`` an existing pair is replaced as one step: both new files are written to temporary names
    first, then renamed over the old ones (atomic.write_files_atomic)."""
    out = Path(out)
    pub = public_path(out)
    for p in (out, pub):
        check_output_file(p, force)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    pub_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    # both written to temp names, then renamed: a failure puts the old pair back, a kill between the two
    # renames leaves the new private key (whose public half it holds) beside the old KEY.pub, never no key
    write_files_atomic([(out, pem, 0o600), (pub, pub_pem, None)], force=force)
    return key_id(private.public_key())


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read ``KEY`` (PEM PKCS8, unencrypted ed25519); InputError (exit 3) with the fix otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"signing key {path} cannot be read ({exc.strerror})",
                         "create one with `h2l keygen --out KEY`") from None
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise InputError(f"{path} is a public key", "sign with the private key KEY, not KEY.pub")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InputError(f"signing key {path} is encrypted", "h2l reads unencrypted PKCS8 keys from "
                         "`h2l keygen`; keep the key file itself private (mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{path} is not a PEM private key", "create one with `h2l keygen --out KEY`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path} is not an ed25519 key", "create one with `h2l keygen --out KEY`")
    return key


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    """A pinned public key from a ``.pub`` path, its PEM bytes, or a key object; InputError (exit 3) otherwise."""
    if isinstance(key, Ed25519PublicKey):
        return key
    what = "public key bytes" if isinstance(key, bytes) else f"public key {key}"
    if isinstance(key, bytes):
        data = key
    else:
        try:
            data = Path(key).read_bytes()
        except OSError as exc:
            raise InputError(f"{what} cannot be read ({exc.strerror})",
                             "pass the KEY.pub written by `h2l keygen`") from None
    if b"PRIVATE KEY" in data:
        raise InputError(f"{what} is a private key", "pin the public half, KEY.pub; never ship the private key")
    try:
        pub = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{what} is not a PEM public key", "pass the KEY.pub written by `h2l keygen`") from None
    if not isinstance(pub, Ed25519PublicKey):
        raise InputError(f"{what} is not an ed25519 key", "pass the KEY.pub written by `h2l keygen`")
    return pub


def signature_bytes(manifest: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """manifest.sig's bytes for ``manifest`` (ed25519 is deterministic: same key and bytes, same file)."""
    sig = private_key.sign(manifest)
    return json_bytes({"format": FORMAT, "version": VERSION, "algorithm": ALGORITHM,
                       "key_id": key_id(private_key.public_key()), "signature": base64.b64encode(sig).decode()})


def _parse_signature(folder: Folder) -> tuple[str, bytes]:
    path = folder.root / SIGNATURE
    if not path.exists() and not path.is_symlink():
        raise IntegrityError(f"{folder.root} has no {SIGNATURE} (unsigned bundle), and a public key is pinned",
                             _PUBLISH + "; with a key pinned, unsigned bundles are never loaded")
    doc = parse_json(folder.read(SIGNATURE, MAX_SIGNATURE_BYTES, SIGNATURE), SIGNATURE)
    fields = {"format": FORMAT, "version": VERSION, "algorithm": ALGORITHM}
    if not isinstance(doc, dict) or any(doc.get(k) != v or type(doc.get(k)) is not type(v)
                                        for k, v in fields.items()):
        raise IntegrityError(f"{SIGNATURE} is not an {FORMAT} v{VERSION} {ALGORITHM} signature", _PUBLISH)
    kid, b64 = doc.get("key_id"), doc.get("signature")
    if not isinstance(kid, str) or not re.fullmatch(r"[0-9a-f]{64}", kid):
        raise IntegrityError(f"{SIGNATURE} has a malformed key_id (want 64 lowercase hex digits)", _PUBLISH)
    try:
        sig = base64.b64decode(b64, validate=True) if isinstance(b64, str) else b""
    except binascii.Error:
        sig = b""
    if len(sig) != 64:
        raise IntegrityError(f"{SIGNATURE} has a malformed signature (want base64 of 64 bytes)", _PUBLISH)
    return kid, sig


def check_signature(root: str | Path | Folder, manifest: bytes, public_key: PublicKeyLike) -> str:
    """Refuse unless ``manifest`` (the bytes about to be parsed) is signed by ``public_key``; returns its key id.

    ``root``: the bundle's open :class:`Folder` (the one the manifest was read through), or its path."""
    pub = load_public_key(public_key)
    folder = root if isinstance(root, Folder) else Folder(root)
    root = folder.root
    kid, sig = _parse_signature(folder)
    pinned = key_id(pub)
    if kid != pinned:
        raise IntegrityError(f"bundle is signed by another key (key id {kid[:16]}…, pinned {pinned[:16]}…)",
                             "pin the publisher's KEY.pub, or re-publish the bundle with the pinned key")
    try:
        pub.verify(sig, manifest)
    except InvalidSignature:
        raise IntegrityError(f"{root.name}/manifest.json was changed after signing (its signature does not verify "
                             f"with the pinned key {pinned[:16]}…)",
                             "re-export and sign the bundle; never edit a published bundle") from None
    return kid


def verify(root: str | Path, public_key: PublicKeyLike) -> str:
    """Check ``root``'s signature alone (no hashes); returns the key id.  :func:`open_bundle` does both."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"bundle folder {root} does not exist", "pass the --out folder of `h2l export`")
    folder = Folder(root)
    return check_signature(folder, folder.read(MANIFEST, MAX_MANIFEST_BYTES, MANIFEST), public_key)

