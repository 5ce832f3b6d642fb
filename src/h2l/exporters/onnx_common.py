"""Pieces every hand-built h2l graph shares: opset, identity metadata, byte-stable serialisation."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__
from ..errors import IntegrityError, OutputError
from ..model.teacher import NORM_EPS
from ..onnx_wire import split_model
from . import BATCH_DIM, INPUT_NAME

#: Opset 18 (IR 8) loads in every onnxruntime since 1.14, including the
#: versions Rust's ort and Go's onnxruntime_go bind.
OPSET = 18
IR_VERSION = 8
PROTOBUF_LIMIT = 2**31 - 1


def query_input(d: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, d])


def output(name: str, width: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [BATCH_DIM, width])


def initializer(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def normalize_nodes(src: str, dst: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """dst = src / max(‖src‖, eps), row-wise: the step numpy's ``project_arrays`` takes, zero rows included."""
    nodes = [
        helper.make_node("Mul", [src, src], ["q_sq"], name="square"),
        helper.make_node("ReduceSum", ["q_sq", "axis_1"], ["q_sumsq"], keepdims=1, name="sum_sq"),
        helper.make_node("Sqrt", ["q_sumsq"], ["q_norm"], name="norm"),
        helper.make_node("Max", ["q_norm", "norm_eps"], ["q_norm_floor"], name="norm_floor"),
        helper.make_node("Div", [src, "q_norm_floor"], [dst], name="normalize"),
    ]
    inits = [initializer("axis_1", np.array([1], np.int64)), initializer("norm_eps", np.array(NORM_EPS, np.float32))]
    return nodes, inits


def make_model(graph: onnx.GraphProto, metadata: dict[str, str]) -> onnx.ModelProto:
    """Wrap ``graph`` with h2l's opset, IR version, producer and sorted identity metadata."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="h2l", producer_version=__version__)
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {k: str(v) for k, v in sorted(metadata.items())})
    return model


def check_size(nbytes: int, what: str) -> None:
    """Refuse, before building anything, a graph over protobuf's 2 GiB single-file limit."""
    if nbytes > PROTOBUF_LIMIT:
        raise OutputError(f"{what} would be {nbytes / 2**30:.2f} GiB, over ONNX's 2 GiB single-file limit",
                          "reduce N (split the teacher into several bundles) or ship the teacher as --format npy")


def serialize(model: onnx.ModelProto, what: str) -> bytes:
    """Deterministic bytes; refuses graphs over protobuf's 2 GiB limit with the fix."""
    check_size(model.ByteSize(), what)
    return model.SerializeToString(deterministic=True)


def check(model: onnx.ModelProto) -> None:
    """Run onnx's full checker (shape inference included) on an in-memory model."""
    onnx.checker.check_model(model, full_check=True)


def check_serialized(data: bytes) -> None:
    """:func:`check` on serialized bytes, run on the model without its large initializers (structure, then
    strict shape and type inference: what ``full_check`` does), so a 350 MB model is not parsed twice more."""
    onnx.checker.check_model(split_model(data, "placeholder")[0])
    onnx.shape_inference.infer_shapes(onnx.load_model_from_string(split_model(data, "external")[0]),
                                      check_type=True, strict_mode=True)


#: ONNX element type → the dtype a manifest names (numpy's spelling; runtime.sessions maps onnxruntime's the same).
ONNX_DTYPES: dict[int, str] = {
    TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16", TensorProto.INT8: "int8", TensorProto.UINT8: "uint8",
    TensorProto.INT16: "int16", TensorProto.UINT16: "uint16", TensorProto.INT32: "int32",
    TensorProto.UINT32: "uint32", TensorProto.INT64: "int64", TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool", TensorProto.STRING: "string",
}


def contract(model: onnx.ModelProto) -> dict:
    """The I/O contract the manifest records: name, dtype and shape (dim names for dynamic axes) per tensor.

    Every dtype is named for what it is; an input or output that is not a tensor of a known element type
    is refused (OutputError), never written down as something else."""
    def one(vi) -> dict:
        kind = vi.type.WhichOneof("value")
        elem = vi.type.tensor_type.elem_type if kind == "tensor_type" else None
        dtype = ONNX_DTYPES.get(elem) if elem is not None else None
        if dtype is None:
            what = f"element type {TensorProto.DataType.Name(elem)}" if elem is not None and \
                elem in TensorProto.DataType.values() else f"type {kind or 'undefined'}"
            raise OutputError(f"model I/O {vi.name!r} has ONNX {what}, which a bundle manifest cannot describe",
                              "bundles carry tensors of " + ", ".join(sorted(set(ONNX_DTYPES.values()))))
        dims = [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]
        return {"name": vi.name, "dtype": dtype, "shape": dims}
    return {"inputs": [one(v) for v in model.graph.input], "outputs": [one(v) for v in model.graph.output]}


def load_model(source, name: str) -> onnx.ModelProto:
    """A bundle's ONNX model from its verified bytes (or a path); unreadable is an IntegrityError naming it."""
    if not isinstance(source, bytes):
        name = getattr(source, "name", name)
    try:
        return onnx.load_model_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
    except Exception as exc:  # noqa: BLE001 - any parse failure: not ONNX
        raise IntegrityError(f"{name} is not a readable ONNX model ({type(exc).__name__})",
                             "re-export the bundle") from None
