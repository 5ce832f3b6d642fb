"""Build hostile copies of a bundle by hand, for tests (issue 15, item 4).

Every builder leaves the copy *consistent*: each listed file's sha256 and size
are recomputed and the manifest is re-signed with the test's key.  A refusal of
such a copy therefore comes from the defence under test, never from the hash
or signature check.  Rust and Go build their own copies in their languages;
docs/reliability.md lists the cases.

Usage::

    key, pub = keypair(tmp_path)
    b = signed_copy(bundle, tmp_path / "b", key)
    external_data(b, key, "../secret.bin")
    open_bundle(b, public_key=pub)  # IntegrityError: ... stores its data outside the bundle
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import onnx
from onnx import external_data_helper, helper

from h2l.bundle.signing import keygen, load_private_key, signature_bytes

MB = 2**20


def keypair(folder: Path, name: str = "key") -> tuple[Path, Path]:
    """A fresh (private, public) key pair under ``folder``."""
    key = Path(folder) / name
    keygen(key)
    return key, Path(f"{key}.pub")


def sha256(path: Path) -> str:
    """sha256 of what ``path`` names, a symlink's target included (the bundle's own sha256_file refuses links)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(MB), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(b: Path) -> dict:
    return json.loads((Path(b) / "manifest.json").read_text())


def write_signed(b: Path, data: bytes | dict, key: Path) -> None:
    """Write the manifest (bytes as given, or a dict as JSON) and a valid manifest.sig over exactly those bytes."""
    if isinstance(data, dict):
        data = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    (Path(b) / "manifest.json").write_bytes(data)
    (Path(b) / "manifest.sig").write_bytes(signature_bytes(data, load_private_key(key)))


def reseal(b: Path, key: Path, add: tuple[str, ...] = (), doc: dict | None = None) -> dict:
    """Recompute sha256 and size of every listed file (plus ``add``), write the manifest and sign it."""
    b = Path(b)
    doc = manifest(b) if doc is None else doc
    paths = [e["path"] for e in doc["files"]] + [p for p in add if p not in {e["path"] for e in doc["files"]}]
    doc["files"] = [{"path": p, "sha256": sha256(b / p), "bytes": (b / p).stat().st_size} for p in paths]
    write_signed(b, doc, key)
    return doc


def signed_copy(src: Path, dst: Path, key: Path) -> Path:
    """A copy of ``src`` signed with ``key``."""
    shutil.copytree(src, dst, symlinks=True)
    write_signed(dst, (Path(src) / "manifest.json").read_bytes(), key)
    return Path(dst)


# ------------------------------------------------------------------ the hostile cases

def _tensor(proto: onnx.ModelProto, name: str | None) -> onnx.TensorProto:
    """The initializer called ``name``, or the largest one."""
    if name is None:
        return max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    return next(t for t in proto.graph.initializer if t.name == name)


def external_data(b: Path, key: Path, location: str, *, listed: bool = False, model: str = "teacher.onnx",
                  tensor: str | None = None) -> Path:
    """Move ``tensor``'s bytes out of ``model`` into ``location`` (relative to the model, may leave the folder)."""
    b = Path(b)
    proto = onnx.load(str(b / model))
    t = _tensor(proto, tensor)
    target = (b / model).parent / location
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(t.raw_data)
    external_data_helper.set_external_data(t, location, offset=0, length=len(t.raw_data))
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    (b / model).write_bytes(proto.SerializeToString())
    reseal(b, key, add=(location,) if listed else ())
    return target


def symlinked_model(b: Path, key: Path, *, outside: bool, model: str = "teacher.onnx") -> Path:
    """Replace ``model`` by a symlink to an identical file outside the folder, or inside it (listed too)."""
    b = Path(b)
    real = (b.parent / f"outside-{model}") if outside else (b / f"real-{model}")
    shutil.move(b / model, real)
    (b / model).symlink_to(real.absolute() if outside else real.name)
    reseal(b, key, add=() if outside else (real.name,))
    return real


def symlinked_manifest(b: Path, key: Path) -> Path:
    """manifest.json as a symlink to a valid, signed manifest outside the folder."""
    b = Path(b)
    outside = b.parent / "outside-manifest.json"
    shutil.move(b / "manifest.json", outside)
    (b / "manifest.json").symlink_to(outside.absolute())
    write_signed(b, outside.read_bytes(), key)  # writes through the link: signature over the outside bytes
    return outside


def huge_manifest(b: Path, key: Path, size: int = 100 * MB) -> None:
    """The real manifest padded with trailing whitespace to ``size`` bytes: valid JSON, valid schema, signed."""
    data = (Path(b) / "manifest.json").read_bytes()
    write_signed(b, data + b" " * (size - len(data)), key)


def deep_manifest(b: Path, key: Path, depth: int) -> None:
    """Add ``"deep": [[[…]]]`` nested ``depth`` levels (written by hand: json.dumps would recurse too)."""
    data = (Path(b) / "manifest.json").read_bytes().rstrip()
    assert data.endswith(b"}")
    write_signed(b, data[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}\n", key)


def manifest_text(b: Path, key: Path, edit) -> None:
    """Sign ``edit(manifest text)``: for JSON json.dumps would not write (duplicate keys, NaN)."""
    write_signed(b, edit((Path(b) / "manifest.json").read_text()).encode(), key)


def wrong_type(value):
    """A value of another JSON type: scalars become lists, lists objects, objects lists."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return {"items": value}
    return [value]


def set_field(b: Path, key: Path, path: str, value) -> None:
    """Set the dotted ``path`` (list indices as numbers) of the manifest to ``value``, then reseal."""
    doc = manifest(b)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    write_signed(b, doc, key)


def get_field(doc: dict, path: str):
    node = doc
    for p in path.split("."):
        node = node[int(p)] if isinstance(node, list) else node[p]
    return node


def onnx_bomb(b: Path, key: Path, model: str = "teacher.onnx", tensor: str | None = None) -> None:
    """``tensor`` declares 2^40 rows (terabytes) while the file holds a few KiB: ONNX's zip bomb."""
    b = Path(b)
    proto = onnx.load(str(b / model))
    t = _tensor(proto, tensor)
    t.dims[0] = 2**40
    (b / model).write_bytes(proto.SerializeToString())
    reseal(b, key)


def onnx_typed_bomb(b: Path, key: Path, model: str = "teacher.onnx") -> None:
    """A Constant node whose tensor declares 2^40 floats in float_data but holds one."""
    b = Path(b)
    proto = onnx.load(str(b / model))
    bomb = helper.make_tensor("bomb", onnx.TensorProto.FLOAT, [1], [1.0])
    bomb.dims[0] = 2**40
    proto.graph.node.append(helper.make_node("Constant", [], ["bomb_out"], value=bomb, name="bomb"))
    (b / model).write_bytes(proto.SerializeToString())
    reseal(b, key)


def truncated_onnx(b: Path, key: Path, keep: float, model: str = "teacher.onnx") -> None:
    """Keep the first ``keep`` fraction of ``model``'s bytes."""
    p = Path(b) / model
    data = p.read_bytes()
    p.write_bytes(data[: max(1, int(len(data) * keep))])
    reseal(b, key)


def truncated_onnx_at_field(b: Path, key: Path, model: str = "teacher.onnx") -> None:
    """Cut ``model`` just before its graph: the prefix still parses as ONNX (a ModelProto with no graph)."""
    p = Path(b) / model
    data = p.read_bytes()
    head = onnx.load_model_from_string(data)
    for field in ("graph", "opset_import", "metadata_props", "functions", "training_info"):
        head.ClearField(field)
    prefix = head.SerializeToString()
    assert data.startswith(prefix) and len(prefix) < len(data)
    p.write_bytes(prefix)
    reseal(b, key)


def zip_onnx(b: Path, key: Path, model: str = "teacher.onnx") -> None:
    """``model`` replaced by a real zip bomb: 64 MiB of zeros deflated to a few KiB."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("model.onnx", bytes(64 * MB))
    (Path(b) / model).write_bytes(buf.getvalue())
    reseal(b, key)


def oversize_onnx(b: Path, key: Path, model: str = "teacher.onnx") -> None:
    """``model`` grown (sparsely: no disk used) past protobuf's 2 GiB limit, hashed honestly."""
    p = Path(b) / model
    with open(p, "r+b") as fh:
        fh.truncate(2**31 + 4096)
    reseal(b, key)


def make_fifo(path: Path) -> Path:
    """Replace ``path`` by a FIFO: any reader that opens it blocks, so a run that finishes proves nobody did."""
    p = Path(path)
    p.unlink(missing_ok=True)
    os.mkfifo(p)
    return p
