"""The large initializers of a serialized ONNX model, found in its bytes without parsing them.

Why: parsing a 350 MB model with ``onnx`` copies every tensor once, reading
``raw_data`` copies it again, the checker serialises and parses it twice more,
and ``InferenceSession(bytes)`` makes two more copies while loading.  At
N = 100k that put four to five copies of the teacher in memory at once.

:func:`split_model` walks the protobuf wire format of ``ModelProto`` →
``GraphProto.initializer`` → ``TensorProto`` and returns a *small* model in
which every large tensor is replaced (by a scalar placeholder for the ONNX
checker, or by an external-data marker that onnxruntime's
``add_external_initializers`` fills), plus where each tensor's bytes lie in the original buffer.  Those bytes
are viewed with ``np.frombuffer``, never copied: the verified buffer is the one
the guard, the numpy reference and the session read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A ``raw_data`` this large or larger is split out; smaller tensors stay in the model.
SPLIT_BYTES = 1 << 16
#: onnxruntime reads tensors under 128 bytes during shape inference, so they are never made external.
EXTERNAL_MIN_BYTES = 128
#: external_data location of a split tensor: a name no file has (onnxruntime is given the data itself).
EXTERNAL_MARK = "h2l-verified-buffer"
#: TensorProto.DataType → little-endian numpy dtype, for the types a session can be handed directly.
DTYPES = {1: "<f4", 2: "u1", 3: "i1", 5: "<i2", 6: "<i4", 7: "<i8", 10: "<f2", 11: "<f8", 12: "<u4", 13: "<u8"}

_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_T_DIMS, _T_TYPE, _T_NAME, _T_RAW, _T_EXTERNAL, _T_LOCATION = 1, 2, 8, 9, 13, 14


class WireError(ValueError):
    """The bytes are not well-formed protobuf (truncated, or a length past the end)."""


@dataclass(frozen=True)
class WireTensor:
    """One split initializer: its name, ONNX data type, shape and where its raw bytes lie in the buffer."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    offset: int
    length: int
    position: int  # index among the graph's initializers

    def array(self, buf: bytes | memoryview) -> np.ndarray:
        """A read-only view of the tensor's bytes (no copy); the caller has checked the length."""
        dt = np.dtype(DTYPES[self.data_type])
        return np.frombuffer(buf, dt, self.length // dt.itemsize, self.offset).reshape(self.dims)


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int) -> Iterator[tuple[int, int, Any, int, int]]:
    """(field number, wire type, value or (lo, hi) span, field start, field end) for each field of a message.

    The value's type follows the wire type (int, (lo, hi) or None), which a static type cannot say: Any."""
    pos = start
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise WireError("field number 0")
        value: Any
        if wt == 0:
            value, pos = _varint(buf, pos, end)
        elif wt == 1 or wt == 5:
            width = 8 if wt == 1 else 4
            if pos + width > end:
                raise WireError("truncated fixed-width field")
            value, pos = None, pos + width
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise WireError("length-delimited field runs past its message")
            value, pos = (pos, pos + n), pos + n
        else:
            raise WireError(f"unsupported wire type {wt}")
        yield num, wt, value, at, pos


def _key(num: int, wt: int) -> bytes:
    return _enc(num << 3 | wt)


def _enc(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _enc(len(payload)) + payload


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _tensor(buf, lo: int, hi: int, mode: str, min_bytes: int, position: int) -> tuple[bytes | None, WireTensor | None]:
    """A TensorProto's replacement bytes and record, or (None, None) to keep it as it is."""
    name, dtype, dims, raw, external = "", 0, [], [], False
    for num, wt, value, _, _ in _fields(buf, lo, hi):
        if num == _T_DIMS:
            if wt == 0:
                dims.append(_signed(value))
            elif wt == 2:
                p, q = value
                while p < q:
                    v, p = _varint(buf, p, q)
                    dims.append(_signed(v))
        elif num == _T_TYPE and wt == 0:
            dtype = value
        elif num == _T_NAME and wt == 2:
            name = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
        elif num == _T_RAW and wt == 2:
            raw.append(value)
        elif num in (_T_EXTERNAL, _T_LOCATION):
            external = True
    if len(raw) != 1 or external or dtype not in DTYPES or raw[0][1] - raw[0][0] < min_bytes:
        return None, None  # small, external, ambiguous or exotic: left for onnx and the guards to judge
    (r_lo, r_hi), = raw
    out = bytearray()
    drop = (_T_RAW,) if mode == "external" else (_T_RAW, _T_DIMS)
    for num, _, _, at, end in _fields(buf, lo, hi):
        if num not in drop:
            out += buf[at:end]
    if mode == "external":
        entry = _len_field(1, b"location") + _len_field(2, EXTERNAL_MARK.encode())
        out += _len_field(_T_EXTERNAL, entry) + _key(_T_LOCATION, 0) + _enc(1)
    else:  # "placeholder": a scalar zero of the same type; the caller checks the real size on the record
        out += _len_field(_T_RAW, bytes(np.dtype(DTYPES[dtype]).itemsize))
    return bytes(out), WireTensor(name, dtype, tuple(dims), r_lo, r_hi - r_lo, position)


def split_model(buf: bytes, mode: str = "external", min_bytes: int = SPLIT_BYTES) -> tuple[bytes, list[WireTensor]]:
    """(small model bytes, split tensors) for a serialized ModelProto; raises :class:`WireError` on malformed bytes.

    ``mode="external"``: split tensors become external-data references for ``add_external_initializers``;
    ``mode="placeholder"``: they become scalar zeros of their type (structure only, for the ONNX checker,
    which would refuse a shape its bytes do not fill; the caller checks the real sizes on the records).
    """
    if mode not in ("external", "placeholder"):
        raise ValueError(mode)
    if mode == "external":  # onnxruntime's shape inference must read small tensors (axes, shapes) inline
        min_bytes = max(min_bytes, EXTERNAL_MIN_BYTES)
    view = memoryview(buf)
    out, tensors, graphs = bytearray(), [], 0
    for num, wt, value, at, end in _fields(view, 0, len(view)):
        if num != _MODEL_GRAPH or wt != 2:
            out += view[at:end]
            continue
        graphs += 1
        if graphs > 1:  # parsers would merge them; h2l never writes that, so refuse rather than guess
            raise WireError("more than one graph field")
        graph, position = bytearray(), 0
        for g_num, g_wt, g_val, g_at, g_end in _fields(view, *value):
            if g_num == _GRAPH_INITIALIZER and g_wt == 2:
                small, rec = _tensor(view, g_val[0], g_val[1], mode, min_bytes, position)
                position += 1
                if small is not None and rec is not None:  # both or neither
                    graph += _len_field(_GRAPH_INITIALIZER, small)
                    tensors.append(rec)
                    continue
            graph += view[g_at:g_end]
        out += _len_field(_MODEL_GRAPH, bytes(graph))
    return bytes(out), tensors


def initializer_arrays(buf: bytes, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Read-only views of a model's split initializers by name (every one, or ``names``), copying nothing."""
    _, tensors = split_model(buf, "placeholder", min_bytes=0)
    out = {}
    for t in tensors:
        if names is None or t.name in names:
            dt = np.dtype(DTYPES[t.data_type])
            n = int(np.prod(t.dims)) if t.dims else 1
            if n * dt.itemsize != t.length:
                raise WireError(f"initializer {t.name!r} holds {t.length} bytes for shape {list(t.dims)}")
            out[t.name] = t.array(buf)
    return out


def join_model(small: bytes, arrays: dict[str, np.ndarray]) -> bytes:
    """Fill the empty ``raw_data`` of the named initializers of ``small`` with the arrays' bytes, copying each once.

    The inverse of a split: a graph is built with empty placeholders (a few kB of protobuf), serialized,
    and joined here, so a 350 MB model never exists as a protobuf message beside its bytes.  Field order is
    kept, so the result is byte for byte what serializing the full message would give."""
    parts: list = []
    view = memoryview(small)
    for num, wt, value, at, end in _fields(view, 0, len(view)):
        if num != _MODEL_GRAPH or wt != 2:
            parts.append(view[at:end])
            continue
        graph: list = []
        for g_num, g_wt, g_val, g_at, g_end in _fields(view, *value):
            tensor = (_join_tensor(view, g_val[0], g_val[1], arrays) if g_num == _GRAPH_INITIALIZER and g_wt == 2
                      else None)
            if tensor is None:
                graph.append(view[g_at:g_end])
            else:
                graph += [_key(_GRAPH_INITIALIZER, 2), _enc(sum(len(p) for p in tensor)), *tensor]
        parts += [_key(_MODEL_GRAPH, 2), _enc(sum(len(p) for p in graph)), *graph]
    return b"".join(parts)


def _join_tensor(buf, lo: int, hi: int, arrays: dict[str, np.ndarray]) -> list | None:
    fields = list(_fields(buf, lo, hi))
    name = next((bytes(buf[v[0]:v[1]]).decode() for num, wt, v, _, _ in fields if num == _T_NAME and wt == 2), None)
    if name not in arrays:
        return None
    arr = np.asarray(arrays[name])
    # numpy's stubs declare ndarray.__buffer__ only for Python >= 3.12
    data = memoryview(np.ascontiguousarray(arr, arr.dtype.newbyteorder("<"))).cast("B")  # type: ignore[arg-type]
    out: list = []
    for num, _wt, value, at, end in fields:
        if num == _T_RAW:
            if value[1] != value[0]:
                raise ValueError(f"initializer {name!r} is not an empty placeholder")
            out += [_key(_T_RAW, 2), _enc(len(data)), data]
        else:
            out.append(buf[at:end])
    return out
