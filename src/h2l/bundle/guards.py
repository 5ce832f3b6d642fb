"""Defences against hostile bundle contents: caps, strict JSON, and ONNX files that reach outside the folder.

A signature proves who published a bundle, not that its contents are safe to
parse: a publisher's key can leak, and a manifest or model built by hand can
try to make a reader allocate without bound, recurse until it crashes, or read
files that are not part of the bundle.  Everything here runs before a model is
handed to onnxruntime, and refuses with an :class:`IntegrityError` (exit 5).

* :func:`read_plain_file`: no symlinks, no FIFOs or devices, and a size cap
  checked before a byte is read.
* :func:`parse_json`: refuses duplicate keys (parsers disagree on which wins),
  NaN/Infinity, and nesting deeper than :data:`MAX_JSON_DEPTH`.
* :func:`check_onnx`: a model file over protobuf's 2 GiB limit is refused
  unread; every tensor (initializers, node attributes, subgraphs, functions,
  sparse tensors) must hold exactly the bytes its shape declares (a small file
  cannot declare terabytes: the ONNX form of a zip bomb), and external data is
  refused: outside the folder or unlisted with a message that says so, and even
  when listed, because sessions are built from one file's verified bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import IntegrityError
from ..onnx_wire import split_model
from .folder import Folder

if TYPE_CHECKING:
    import onnx

MAX_MANIFEST_BYTES = 64 * 2**20  # an N = 700,000 manifest (the 2 GiB ONNX limit at d = 384) is ~20 MB
MAX_SIGNATURE_BYTES = 4096
MAX_JSON_DEPTH = 64  # an h2l manifest is 6 deep; serde_json stops at 128
MAX_MODEL_BYTES = 2**31 - 1  # protobuf's single-message limit; h2l never writes larger models

_FIX = "the bundle was built by hand or tampered with; re-export it with `h2l export`"
_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128,
         16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2}  # TensorProto.DataType
_TYPED = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def read_plain_file(path: Path, cap: int, what: str) -> bytes:
    """Read a regular file, refusing symlinks, FIFOs and devices, and refusing before reading when over ``cap``.

    Opened relative to its folder (:class:`h2l.bundle.folder.Folder`); a bundle reader that holds the
    bundle's folder open calls ``folder.read`` directly, so every file comes through one handle."""
    path = Path(path)
    with Folder(path.parent) as folder:
        return folder.read(path.name, cap, what)


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise IntegrityError(f"JSON object repeats the key {k!r} (readers would disagree on its value)", _FIX)
            seen.add(k)
    return out


def _constant(name: str) -> float:
    raise IntegrityError(f"JSON holds {name}, which is not JSON", _FIX)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise IntegrityError(f"JSON number {text[:20]} overflows a 64-bit float", _FIX)
    return value


def json_depth(obj: object) -> int:
    """Nesting depth of a parsed JSON value, computed without recursion."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return depth


def parse_json(data: bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> object:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity, at most ``max_depth`` levels."""
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_constant,
                         parse_float=_float)
    except RecursionError:
        raise IntegrityError(f"{what} is nested too deeply to parse (over {max_depth} levels)", _FIX) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{what} is not valid JSON ({str(exc).splitlines()[0][:120]})", _FIX) from None
    except IntegrityError as exc:
        raise IntegrityError(f"{what}: {exc.message}", exc.fix) from None
    if json_depth(doc) > max_depth:
        raise IntegrityError(f"{what} is nested {json_depth(doc)} levels deep, over the limit of {max_depth}", _FIX)
    return doc


def _tensors(graph) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every TensorProto a graph holds, with a name for messages: initializers, attributes, subgraphs."""
    for t in graph.initializer:
        yield f"initializer {t.name!r}", t
    for s in graph.sparse_initializer:
        yield f"sparse initializer {s.values.name!r}", s.values
        yield f"sparse initializer {s.values.name!r} indices", s.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes) -> Iterator[tuple[str, onnx.TensorProto]]:
    for node in nodes:
        for a in node.attribute:
            where = f"node {node.name or node.op_type!r} attribute {a.name!r}"
            for t in ([a.t] if a.HasField("t") else []) + list(a.tensors):
                yield where, t
            for s in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                yield where, s.values
                yield where, s.indices
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(g)


def _check_inline(rel: str, where: str, t) -> None:
    if any(d < 0 for d in t.dims):
        raise IntegrityError(f"{rel} {where} has a negative dimension {list(t.dims)}", _FIX)
    n = math.prod(t.dims)
    bits = _BITS.get(t.data_type)
    if bits is None:  # strings, or a type this onnx does not know: onnxruntime decides
        return
    if t.HasField("raw_data") or n == 0:
        _check_size(rel, where, t.dims, t.data_type, len(t.raw_data))
        return
    field = next((f for f in _TYPED if len(getattr(t, f))), None)
    slots = 2 if t.data_type in (14, 15) else (bits / 8 if bits < 8 else 1)
    _mismatch(rel, where, t.dims, n, math.ceil(n * slots), len(getattr(t, field)) if field else 0)


def _check_size(rel: str, where: str, dims, data_type: int, raw_bytes: int) -> None:
    """A tensor's raw bytes must be exactly what its shape and type declare."""
    if any(d < 0 for d in dims):
        raise IntegrityError(f"{rel} {where} has a negative dimension {list(dims)}", _FIX)
    n = math.prod(dims)
    bits = _BITS.get(data_type)
    if bits is not None:
        _mismatch(rel, where, dims, n, math.ceil(n * bits / 8), raw_bytes)


def _mismatch(rel: str, where: str, dims, n: int, want: int, got: int) -> None:
    if got != want:
        raise IntegrityError(f"{rel} {where} declares shape {list(dims)} ({n:,} elements) but holds "
                             f"{got:,} of the {want:,} values or bytes that needs (an oversize or truncated tensor)",
                             _FIX)


def _check_external(rel: str, where: str, t, listed: dict[str, int]) -> None:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    base = PurePosixPath(rel).parent
    parts = loc.replace("\\", "/").split("/")
    target = "/".join((*base.parts, *parts)) if base.parts else "/".join(parts)
    if not loc or loc.startswith(("/", "\\")) or ":" in parts[0] or any(p in ("", ".", "..") for p in parts):
        raise IntegrityError(f"{rel} {where} stores its data outside the bundle ({loc!r})",
                             "refused: a model may only read files inside its bundle; " + _FIX)
    if target not in listed:
        raise IntegrityError(f"{rel} {where} stores its data in {target!r}, which the manifest does not list "
                             "(unhashed, unsigned data)", _FIX)
    try:
        offset, length = int(info.get("offset", 0)), int(info.get("length", listed[target]))
    except ValueError:
        raise IntegrityError(f"{rel} {where} has a malformed external-data offset or length", _FIX) from None
    bits = _BITS.get(t.data_type)
    want = None if bits is None else math.ceil(math.prod(t.dims) * bits / 8)
    if offset < 0 or length < 0 or offset + length > listed[target] or (want is not None and want != length):
        raise IntegrityError(f"{rel} {where} reads bytes {offset}..{offset + length} of {target!r} "
                             f"({listed[target]:,} bytes) for a tensor of {want} bytes", _FIX)


def check_model_size(rel: str, size: int) -> None:
    """Refuse, unread, a model file over protobuf's 2 GiB limit: no reader could parse it."""
    if size > MAX_MODEL_BYTES:
        raise IntegrityError(f"model file {rel} is {size:,} bytes, over ONNX's {MAX_MODEL_BYTES:,}-byte single-file "
                             "limit (refused unread)", _FIX)


def check_onnx(root: Path, rel: str, listed: dict[str, int], data: bytes | None = None) -> None:
    """Refuse a model that is oversize, not ONNX, declares tensors it does not hold, or reads unlisted files.

    ``listed`` maps every manifest path to its size; ``data`` are the model's hash-checked bytes (the ones a
    session will be built from); without them the file is read here.
    """
    import onnx

    if data is None:
        with Folder(root) as folder:
            data = folder.read(rel, MAX_MODEL_BYTES, f"model file {rel}")
    # the large initializers are checked on their wire records and left out of the parse: parsing and the
    # checker would otherwise copy a 350 MB model three times over
    try:
        small, split = split_model(data, "placeholder")
        model = onnx.load_model_from_string(small)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise IntegrityError(f"{rel} is not a readable ONNX model ({type(exc).__name__})", _FIX) from None
    del data, small
    for w in split:
        _check_size(rel, f"initializer {w.name!r}", w.dims, w.data_type, w.length)
    stripped = {w.position for w in split}
    tensors = [wt for i, wt in enumerate(_tensors(model.graph)) if i not in stripped]
    for f in model.functions:
        tensors += list(_node_tensors(f.node))
    external = False
    for where, t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            _check_external(rel, where, t, listed)
            external = True
        else:
            _check_inline(rel, where, t)
    if external:  # every runtime builds its session from the verified bytes, which cannot reach a second file
        raise IntegrityError(f"{rel} keeps tensor data in external files; bundles hold single-file models "
                             "(loaded from the bytes whose sha256 was checked)", _FIX)
    try:  # structure (graph present, opsets, node inputs defined): catches a file cut at a field boundary
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError, or protobuf errors on odd models
        raise IntegrityError(f"{rel} fails the ONNX checker ({str(exc).strip().splitlines()[0][:160]})", _FIX) from None
