"""The bundle layer on its own: manifest schema, safe paths, file entries, open_bundle and read_verified."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil

import pytest

from conftest import flip_byte, one_line_error
from h2l.bundle.files import file_entries, read_verified, safe_path, sha256_file
from h2l.bundle.layout import MANIFEST, json_bytes
from h2l.bundle.reader import open_bundle
from h2l.bundle.schema import validate_manifest
from h2l.cli import app
from h2l.errors import InputError, IntegrityError
from h2l.export import export_onnx


@pytest.fixture
def bundle(tmp_path, small_teacher):
    return export_onnx(small_teacher, tmp_path / "b").out


def _doc(bundle):
    return json.loads((bundle / MANIFEST).read_text())


def test_json_bytes_are_canonical():
    assert json_bytes({"b": 1, "a": [1.5]}) == b'{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        json_bytes({"x": float("nan")})


def test_file_entries_hash_every_file_but_the_manifest(bundle):
    entries = file_entries(bundle)
    assert [e["path"] for e in entries] == sorted(e["path"] for e in entries)
    assert MANIFEST not in {e["path"] for e in entries}
    for e in entries:
        data = (bundle / e["path"]).read_bytes()
        assert e["sha256"] == hashlib.sha256(data).hexdigest() == sha256_file(bundle / e["path"])
        assert e["bytes"] == len(data)
    assert entries == _doc(bundle)["files"]


def test_validate_manifest_lists_violations(bundle):
    doc = _doc(bundle)
    validate_manifest(doc)
    bad = copy.deepcopy(doc)
    del bad["teacher"]
    bad["golden"]["atol"] = "tight"
    with pytest.raises(IntegrityError, match="does not match the manifest schema") as e:
        validate_manifest(bad)
    assert "teacher" in str(e.value) and "atol" in str(e.value)
    with pytest.raises(IntegrityError, match="schema_version 2"):
        validate_manifest({**doc, "schema_version": 2})
    with pytest.raises(IntegrityError, match="not a JSON object"):
        validate_manifest([doc])


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", "", "a\0b",
                                 "golden/inputs.npy\0"])
def test_safe_path_refuses_escapes(bundle, rel):
    with pytest.raises(IntegrityError, match="not a plain relative path"):
        safe_path(bundle, rel)


def test_safe_path_refuses_symlink_out(bundle, tmp_path):
    (tmp_path / "outside.npy").write_bytes(b"x")
    os.symlink(tmp_path / "outside.npy", bundle / "golden" / "link.npy")
    with pytest.raises(IntegrityError, match="resolves outside the bundle"):
        safe_path(bundle, "golden/link.npy")
    assert safe_path(bundle, "golden/inputs.npy") == bundle / "golden" / "inputs.npy"


def test_open_bundle_checks(bundle, tmp_path):
    b = open_bundle(bundle)
    assert b.models["teacher"]["file"] == "teacher.onnx" and b.golden_inputs().ndim == 2
    with pytest.raises(InputError, match="does not exist"):
        open_bundle(tmp_path / "nope")
    copy_ = tmp_path / "c"
    shutil.copytree(bundle, copy_)
    (copy_ / "golden" / "inputs.npy").write_bytes(b"\0" * (copy_ / "golden" / "inputs.npy").stat().st_size)
    with pytest.raises(IntegrityError, match="golden/inputs.npy fails its sha256"):
        open_bundle(copy_)
    open_bundle(copy_, check_hashes=False)  # sizes still match: only the hash can tell


def test_defer_models_leaves_model_hashes_to_read_verified(bundle, tmp_path):
    copy_ = tmp_path / "c"
    shutil.copytree(bundle, copy_)
    flip_byte(copy_ / "teacher.onnx", 100, 0xFF)
    b = open_bundle(copy_, defer_models=True)  # not hashed yet ...
    with pytest.raises(IntegrityError, match="teacher.onnx fails its sha256"):
        b.read_verified("teacher.onnx")  # ... but never loaded unchecked
    with pytest.raises(IntegrityError, match="teacher.onnx fails its sha256"):
        open_bundle(copy_)


def test_read_verified_returns_the_listed_bytes(bundle):
    b = open_bundle(bundle)
    for e in b.manifest["files"]:
        assert read_verified(bundle, e) == (bundle / e["path"]).read_bytes()
    with pytest.raises(IntegrityError, match="does not list its sha256"):
        b.read_verified("not/listed.onnx")
    (bundle / "teacher.onnx").unlink()
    with pytest.raises(IntegrityError, match="bundle file teacher.onnx is missing"):
        b.read_verified("teacher.onnx")


def test_unlisted_reference_is_refused(bundle):
    doc = _doc(bundle)
    doc["files"] = [e for e in doc["files"] if e["path"] != "golden/inputs.npy"]
    (bundle / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="refers to 'golden/inputs.npy' but does not list its sha256"):
        open_bundle(bundle)


def test_a_nul_byte_in_a_manifest_path_is_an_integrity_error(bundle, runner):
    """Exit 5 with the one-line error, not a ValueError (exit 1) from the OS call."""
    doc = _doc(bundle)
    doc["files"][0]["path"] += "\0"
    (bundle / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="not a plain relative path"):
        open_bundle(bundle)
    one_line_error(runner.invoke(app, ["verify", str(bundle), "--provider", "cpu"]), 5, "not a plain relative path")
