"""Pieces every hand-built h2l graph shares: opset, identity metadata, byte-stable serialisation."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__
from ..errors import OutputError
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


def make_model(graph: onnx.GraphProto, metadata: dict[str, str]) -> onnx.ModelProto:
    """Wrap ``graph`` with h2l's opset, IR version, producer and sorted identity metadata."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="h2l", producer_version=__version__)
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {k: str(v) for k, v in sorted(metadata.items())})
    return model


def serialize(model: onnx.ModelProto, what: str) -> bytes:
    """Deterministic bytes; refuses graphs over protobuf's 2 GiB limit with the fix."""
    size = model.ByteSize()
    if size > PROTOBUF_LIMIT:
        raise OutputError(f"{what} would be {size / 2**30:.2f} GiB, over ONNX's 2 GiB single-file limit",
                          "reduce N (split the teacher into several bundles) or ship the teacher as --format npy")
    return model.SerializeToString(deterministic=True)


def check(model: onnx.ModelProto) -> None:
    """Run onnx's full checker (shape inference included) on an in-memory model."""
    onnx.checker.check_model(model, full_check=True)
