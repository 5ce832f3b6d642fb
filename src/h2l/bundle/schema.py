"""manifest.json's published JSON Schema and its validation (every violation named in one error)."""

from __future__ import annotations

import json
from importlib import resources

from ..errors import IntegrityError
from .layout import MANIFEST

SCHEMA_VERSION = 1


def schema() -> dict:
    """The published JSON Schema of manifest.json."""
    return json.loads(resources.files("h2l.schema").joinpath("manifest.schema.json").read_text())


def validate_manifest(doc: object, where: str = MANIFEST) -> dict:
    """Check ``doc`` against the schema (every violation is listed in one IntegrityError); returns it, a dict."""
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
    return doc
