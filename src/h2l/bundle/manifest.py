"""The artifact bundle on disk: manifest schema, hashes, golden vectors, safe opening.

A bundle is a folder that Python, Rust and Go open the same way:

    manifest.json        schema'd (h2l/schema/manifest.schema.json); written last
    teacher.onnx         student.onnx (optional)
    golden/*.npy         little-endian float32 inputs and expected outputs
    reports/*.json       verification and training summaries

:func:`open_bundle` refuses a bundle whose schema version is unknown, whose
file entries leave the folder, or whose bytes do not match their sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import InputError, IntegrityError
from .guards import MAX_MANIFEST_BYTES, check_model_size, check_onnx, parse_json, read_plain_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # beside the manifest, never listed in it (h2l.bundle.signing)
GOLDEN_INPUTS = "golden/inputs.npy"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def file_entries(root: Path) -> list[dict]:
    """sha256 and size of every file under ``root`` except the manifest, sorted by path."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in (MANIFEST, SIGNATURE):
            out.append({"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size})
    return out


def schema() -> dict:
    """The published JSON Schema of manifest.json."""
    return json.loads(resources.files("h2l.schema").joinpath("manifest.schema.json").read_text())


def validate_manifest(doc: dict, where: str = MANIFEST) -> None:
    """Check ``doc`` against the schema; every violation is listed in one IntegrityError."""
    import jsonschema

    if not isinstance(doc, dict):
        raise IntegrityError(f"{where} is not a JSON object", "re-export the bundle")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise IntegrityError(f"{where} has schema_version {version!r}; this h2l reads {SCHEMA_VERSION}",
                             "re-export the bundle with this h2l version, or upgrade h2l")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    for e in errors:  # a path outside the bundle is a security refusal: say so plainly
        if e.validator == "pattern" and e.schema.get("pattern") == schema()["$defs"]["relpath"]["pattern"]:
            raise IntegrityError(f"manifest names file {e.instance!r}, which is not a plain relative path",
                                 "the manifest was tampered with; re-export the bundle")
    if errors:
        msgs = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:5]]
        raise IntegrityError(f"{where} does not match the manifest schema ({'; '.join(msgs)})", "re-export the bundle")


def safe_path(root: Path, rel: str) -> Path:
    """Resolve a manifest path inside ``root``; absolute paths, '..' and escaping symlinks are refused."""
    pure = PurePosixPath(rel)
    if not isinstance(rel, str) or "\\" in rel or rel.startswith("/") \
            or any(part in ("", ".", "..") for part in rel.split("/")):
        raise IntegrityError(f"manifest names file {rel!r}, which is not a plain relative path",
                             "the manifest was tampered with; re-export the bundle")
    full = root.joinpath(*pure.parts)
    real_root = root.resolve()
    if not full.resolve().is_relative_to(real_root):
        raise IntegrityError(f"manifest file {rel!r} resolves outside the bundle (symlink)",
                             "remove the symlink; bundles hold plain files only")
    for i in range(1, len(pure.parts) + 1):  # inside the folder too: a link can be swapped after the check
        if root.joinpath(*pure.parts[:i]).is_symlink():
            raise IntegrityError(f"bundle file {rel!r} is a symlink", "bundles hold plain files only; copy it in")
    return full


@dataclass(frozen=True)
class Bundle:
    """An opened, integrity-checked bundle."""

    root: Path
    manifest: dict
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
        data = read_verified(self.root, entry)
        if rel in {m["file"] for m in self.models.values()}:
            check_onnx(self.root, rel, {e["path"]: e["bytes"] for e in self.manifest["files"]}, data)
        return data

    def golden_inputs(self) -> np.ndarray:
        rel = self.manifest["golden"]["inputs"]
        return read_npy(self.read_verified(rel), rel)

    def golden_output(self, model: str, output: str) -> np.ndarray:
        rel = self.manifest["golden"]["outputs"][model][output]
        return read_npy(self.read_verified(rel), rel)


def read_npy(src: Path | bytes, name: str | None = None) -> np.ndarray:
    """A .npy from a path or from verified bytes, never unpickled."""
    try:
        return np.load(io.BytesIO(src) if isinstance(src, bytes) else src, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IntegrityError(f"{name or Path(src).name} is not a readable .npy ({type(exc).__name__})",
                             "re-export the bundle") from None


def read_verified(root: Path, entry: dict) -> bytes:
    """Read a listed file once, then check its size and sha256 on those very bytes (no check-then-use gap).

    One read into one buffer: the caller builds its session from the bytes that were hashed.
    """
    full = safe_path(root, entry["path"])
    try:
        with open(full, "rb") as fh:
            data = fh.read(entry["bytes"] + 1)  # one byte more than listed reveals a grown file
    except OSError:
        raise IntegrityError(f"bundle file {entry['path']} is missing or unreadable", "re-export the bundle") from None
    if len(data) != entry["bytes"]:
        raise IntegrityError(f"bundle file {entry['path']} has {len(data)} bytes, manifest says {entry['bytes']} "
                             "(sha256 mismatch)", "re-export the bundle; do not edit its files")
    h = hashlib.sha256()
    view = memoryview(data)
    for i in range(0, len(view), 1 << 20):  # streamed over the buffer, no copy
        h.update(view[i:i + (1 << 20)])
    if h.hexdigest() != entry["sha256"]:
        raise IntegrityError(f"bundle file {entry['path']} fails its sha256 check (modified or corrupt)",
                             "re-export the bundle; do not edit its files")
    return data


def open_bundle(root: str | Path, *, check_hashes: bool = True, defer_models: bool = False,
                public_key=None) -> Bundle:
    """Open ``root``: read and validate the manifest, check every listed file's size and sha256.

    ``defer_models``: the model files' hashes are left to :meth:`Bundle.read_verified`, which the caller
    must use to load them (hashed once, on the bytes it loads).
    ``public_key`` (a KEY.pub path, its PEM bytes or a key): the manifest must carry a valid signature by
    that key (h2l.bundle.signing), checked on the exact bytes parsed; there is no unsigned fallback.
    With ``check_hashes`` every model is also screened before any session sees it (bundle.guards).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"bundle folder {root} does not exist", "pass the --out folder of `h2l export`")
    mpath = root / MANIFEST
    if not mpath.exists() and not mpath.is_symlink():
        raise IntegrityError(f"{root} has no {MANIFEST} (incomplete or not a bundle)",
                             "re-run `h2l export`; a bundle is complete only once its manifest exists")
    data = read_plain_file(mpath, MAX_MANIFEST_BYTES, MANIFEST)
    kid = None
    if public_key is not None:
        from .signing import check_signature

        kid = check_signature(root, data, public_key)
    doc = parse_json(data, MANIFEST)
    validate_manifest(doc)
    deferred = {m["file"] for m in doc["models"].values()} if defer_models else set()
    listed = {}
    model_files = {m["file"] for m in doc["models"].values()}
    for entry in doc["files"]:
        full = safe_path(root, entry["path"])
        listed[entry["path"]] = entry
        if not full.is_file():
            raise IntegrityError(f"bundle file {entry['path']} is missing", "re-export the bundle")
        if full.stat().st_size != entry["bytes"]:
            raise IntegrityError(f"bundle file {entry['path']} has {full.stat().st_size} bytes, manifest says "
                                 f"{entry['bytes']} (sha256 mismatch)", "re-export the bundle; do not edit its files")
        if entry["path"] in model_files:
            check_model_size(entry["path"], entry["bytes"])  # before hashing 2 GiB of it
        if check_hashes and entry["path"] not in model_files and sha256_file(full) != entry["sha256"]:
            raise IntegrityError(f"bundle file {entry['path']} fails its sha256 check (modified or corrupt)",
                                 "re-export the bundle; do not edit its files")
    referenced = [m["file"] for m in doc["models"].values()] + [doc["golden"]["inputs"]] + \
        [p for outs in doc["golden"]["outputs"].values() for p in outs.values()] + \
        [doc[k]["file"] for k in ("tokenizer", "answers") if k in doc] + \
        ([doc["golden"]["texts"]] if "texts" in doc["golden"] else [])
    for rel in referenced:
        if rel not in listed:
            raise IntegrityError(f"manifest refers to {rel!r} but does not list its sha256", "re-export the bundle")
    bundle = Bundle(root, doc, kid)
    if check_hashes:  # models: hashed and screened on one read (deferred: by the caller's read_verified)
        for rel in sorted(model_files - deferred):
            bundle.read_verified(rel)
    return bundle
