"""Sign a bundle that is already published: check all of it, then write manifest.sig over the checked bytes.

Above :mod:`h2l.bundle.reader` (it opens the bundle to check it) and :mod:`h2l.bundle.signing`
(the keys and the signature format), so neither of those needs the other's caller.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import write_bytes_atomic
from ..errors import IntegrityError
from .folder import Folder
from .guards import MAX_MANIFEST_BYTES
from .layout import MANIFEST, SIGNATURE
from .reader import open_bundle
from .signing import key_id, load_private_key, signature_bytes


def sign_bundle(root: str | Path, key: str | Path) -> str:
    """Check ``root`` (hashes included), then write its manifest.sig atomically; returns the key id."""
    private = load_private_key(key)
    root = Path(root)
    folder = Folder(root)
    data = folder.read(MANIFEST, MAX_MANIFEST_BYTES, MANIFEST)
    open_bundle(root)  # schema, paths, every hash and every model's guards
    if folder.read(MANIFEST, MAX_MANIFEST_BYTES, MANIFEST) != data:
        raise IntegrityError(f"{root}/{MANIFEST} changed while it was being checked",
                             "publish the bundle once (h2l export), then sign it")
    write_bytes_atomic(root / SIGNATURE, signature_bytes(data, private))  # the bytes that were checked
    return key_id(private.public_key())
