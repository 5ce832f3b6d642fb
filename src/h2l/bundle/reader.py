"""Open a bundle folder the way Python, Rust and Go all do: manifest, schema, paths, sizes, sha256, guards.

:func:`open_bundle` refuses a bundle whose schema version is unknown, whose
file entries leave the folder, or whose bytes do not match their sha256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, IntegrityError
from .files import read_npy, read_verified, safe_path
from .folder import Folder, sha256_stream
from .guards import MAX_MANIFEST_BYTES, check_model_size, check_onnx, parse_json
from .layout import MANIFEST
from .schema import validate_manifest
from .signing import PublicKeyLike, check_signature


@dataclass(frozen=True)
class BundleReader:
    """An opened, integrity-checked bundle folder: its manifest, and verified bytes of its listed files.

    Every file is read through ``folder``, the one directory handle the manifest was read from: a bundle
    republished (renamed over) while it is open is still read from the folder this reader opened."""

    root: Path
    manifest: dict
    folder: Folder = field(repr=False, compare=False)
    key_id: str | None = None  # the pinned key that signed it, when opened with public_key

    def path(self, rel: str) -> Path:
        return safe_path(self.root, rel)

    @property
    def models(self) -> dict:
        return self.manifest["models"]

    def read_verified(self, rel: str) -> bytes:
        """The bytes of listed file ``rel``, checked against the manifest: build from these, never re-open.

        A model file is also screened (bundle.guards.check_onnx) on these same bytes, so the guard, the hash
        and the session all see one read."""
        entry = next((e for e in self.manifest["files"] if e["path"] == rel), None)
        if entry is None:
            raise IntegrityError(f"manifest refers to {rel!r} but does not list its sha256", "re-export the bundle")
        data = read_verified(self.folder, entry)
        if rel in {m["file"] for m in self.models.values()}:
            check_onnx(self.root, rel, {e["path"]: e["bytes"] for e in self.manifest["files"]}, data)
        return data

    def golden_inputs(self) -> np.ndarray:
        rel = self.manifest["golden"]["inputs"]
        return read_npy(self.read_verified(rel), rel)

    def golden_output(self, model: str, output: str) -> np.ndarray:
        rel = self.manifest["golden"]["outputs"][model][output]
        return read_npy(self.read_verified(rel), rel)


def open_bundle(root: str | Path, *, check_hashes: bool = True, defer_models: bool = False,
                public_key: PublicKeyLike | None = None) -> BundleReader:
    """Open ``root``: read and validate the manifest, check every listed file's size and sha256.

    ``defer_models``: the model files' hashes are left to :meth:`Bundle.read_verified`, which the caller
    must use to load them (hashed once, on the bytes it loads).
    ``public_key`` (a KEY.pub path, its PEM bytes or an Ed25519PublicKey): the manifest must carry a valid signature by
    that key (h2l.bundle.signing), checked on the exact bytes parsed; there is no unsigned fallback.
    With ``check_hashes`` every model is also screened before any session sees it (bundle.guards).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"bundle folder {root} does not exist", "pass the --out folder of `h2l export`")
    folder = Folder(root)  # the one handle every file below is opened through
    mpath = root / MANIFEST
    if not mpath.exists() and not mpath.is_symlink():
        raise IntegrityError(f"{root} has no {MANIFEST} (incomplete or not a bundle)",
                             "re-run `h2l export`; a bundle is complete only once its manifest exists")
    data = folder.read(MANIFEST, MAX_MANIFEST_BYTES, MANIFEST)
    kid = None
    if public_key is not None:
        kid = check_signature(folder, data, public_key)
    doc = validate_manifest(parse_json(data, MANIFEST))
    deferred = {m["file"] for m in doc["models"].values()} if defer_models else set()
    listed = {}
    model_files = {m["file"] for m in doc["models"].values()}
    for entry in doc["files"]:
        rel = entry["path"]
        safe_path(root, rel)  # names the rule a path breaks; the open below refuses what is swapped in after
        listed[rel] = entry
        with folder.open(rel, f"bundle file {rel}") as fh:  # regular, no symlink on the way, FIFOs refused
            size = os.fstat(fh.fileno()).st_size
            if size != entry["bytes"]:
                raise IntegrityError(f"bundle file {rel} has {size} bytes, manifest says {entry['bytes']} "
                                     "(sha256 mismatch)", "re-export the bundle; do not edit its files")
            if rel in model_files:
                check_model_size(rel, entry["bytes"])  # before hashing 2 GiB of it
            elif check_hashes and sha256_stream(fh)[0] != entry["sha256"]:
                raise IntegrityError(f"bundle file {rel} fails its sha256 check (modified or corrupt)",
                                     "re-export the bundle; do not edit its files")
    referenced = [m["file"] for m in doc["models"].values()] + [doc["golden"]["inputs"]] + \
        [p for outs in doc["golden"]["outputs"].values() for p in outs.values()] + \
        [doc[k]["file"] for k in ("tokenizer", "answers") if k in doc] + \
        ([doc["golden"]["texts"]] if "texts" in doc["golden"] else [])
    for rel in referenced:
        if rel not in listed:
            raise IntegrityError(f"manifest refers to {rel!r} but does not list its sha256", "re-export the bundle")
    bundle = BundleReader(root, doc, folder, kid)
    if check_hashes:  # models: hashed and screened on one read (deferred: by the caller's read_verified)
        for rel in sorted(model_files - deferred):
            bundle.read_verified(rel)
    return bundle

