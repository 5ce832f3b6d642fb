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
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import InputError, IntegrityError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
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
        if p.is_file() and rel != MANIFEST:
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
    return full


@dataclass(frozen=True)
class Bundle:
    """An opened, integrity-checked bundle."""

    root: Path
    manifest: dict

    def path(self, rel: str) -> Path:
        return safe_path(self.root, rel)

    @property
    def models(self) -> dict:
        return self.manifest["models"]

    def golden_inputs(self) -> np.ndarray:
        return read_npy(self.path(self.manifest["golden"]["inputs"]))

    def golden_output(self, model: str, output: str) -> np.ndarray:
        return read_npy(self.path(self.manifest["golden"]["outputs"][model][output]))


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IntegrityError(f"{path.name} is not a readable .npy ({type(exc).__name__})",
                             "re-export the bundle") from None


def open_bundle(root: str | Path, *, check_hashes: bool = True) -> Bundle:
    """Open ``root``: read and validate the manifest, check every listed file's size and sha256."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"bundle folder {root} does not exist", "pass the --out folder of `h2l export`")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise IntegrityError(f"{root} has no {MANIFEST} (incomplete or not a bundle)",
                             "re-run `h2l export`; a bundle is complete only once its manifest exists")
    try:
        doc = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{MANIFEST} is not valid JSON ({exc})", "re-export the bundle") from None
    validate_manifest(doc)
    listed = {}
    for entry in doc["files"]:
        full = safe_path(root, entry["path"])
        listed[entry["path"]] = entry
        if not full.is_file():
            raise IntegrityError(f"bundle file {entry['path']} is missing", "re-export the bundle")
        if full.stat().st_size != entry["bytes"]:
            raise IntegrityError(f"bundle file {entry['path']} has {full.stat().st_size} bytes, manifest says "
                                 f"{entry['bytes']} (sha256 mismatch)", "re-export the bundle; do not edit its files")
        if check_hashes and sha256_file(full) != entry["sha256"]:
            raise IntegrityError(f"bundle file {entry['path']} fails its sha256 check (modified or corrupt)",
                                 "re-export the bundle; do not edit its files")
    referenced = [m["file"] for m in doc["models"].values()] + [doc["golden"]["inputs"]] + \
        [p for outs in doc["golden"]["outputs"].values() for p in outs.values()] + \
        [doc[k]["file"] for k in ("tokenizer", "answers") if k in doc] + \
        ([doc["golden"]["texts"]] if "texts" in doc["golden"] else [])
    for rel in referenced:
        if rel not in listed:
            raise IntegrityError(f"manifest refers to {rel!r} but does not list its sha256", "re-export the bundle")
    return Bundle(root, doc)
