"""The student as ONNX: a hand-built folded graph (default) or torch's literal graph (--no-fold).

The folded graph runs, per layer, one d×d Gemm (attention and, in layer 1,
the input projection folded in), LayerNorm, the feed-forward pair with exact
(erf) GELU, residual and LayerNorm; then the output projection.  onnxruntime
fuses the erf pattern into its Gelu kernel.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import onnx
from onnx import helper

from ..model.student import FoldedStudent, ProjectionTransformer
from . import BATCH_DIM, INPUT_NAME, PROJECTED_NAME
from .onnx_common import OPSET, initializer, make_model, normalize_nodes, output, query_input

OUTPUT_NODE = "output_proj"


def make_folded_student_model(folded: FoldedStudent, metadata: dict[str, str]) -> onnx.ModelProto:
    """Build the folded student graph from plain matrices (see :func:`h2l.model.student.fold`)."""
    d = folded.config.dim
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [initializer("sqrt2", np.array(math.sqrt(2.0), np.float32)),
                                     initializer("one", np.array(1.0, np.float32)),
                                     initializer("half", np.array(0.5, np.float32))]
    x = INPUT_NAME
    if folded.config.normalize_input:
        n_nodes, n_inits = normalize_nodes(x, "q_hat")
        nodes += n_nodes
        inits += n_inits
        x = "q_hat"
    for i, lay in enumerate(folded.layers):
        p = f"layer{i}"
        # weights stored (out, in) with transB=1: measured 80 µs vs 102 µs per query for (in, out) at level "all"
        inits += [initializer(f"{p}.w_attn", lay.w_attn.T), initializer(f"{p}.b_attn", lay.b_attn),
                  initializer(f"{p}.ln1_w", lay.ln1_w), initializer(f"{p}.ln1_b", lay.ln1_b),
                  initializer(f"{p}.w1", lay.w1.T), initializer(f"{p}.b1", lay.b1),
                  initializer(f"{p}.w2", lay.w2.T), initializer(f"{p}.b2", lay.b2),
                  initializer(f"{p}.ln2_w", lay.ln2_w), initializer(f"{p}.ln2_b", lay.ln2_b)]
        nodes += [
            helper.make_node("Gemm", [x, f"{p}.w_attn", f"{p}.b_attn"], [f"{p}.attn"], transB=1, name=f"{p}.attn"),
            helper.make_node("LayerNormalization", [f"{p}.attn", f"{p}.ln1_w", f"{p}.ln1_b"], [f"{p}.x1"],
                             axis=-1, epsilon=lay.ln1_eps, name=f"{p}.norm1"),
            helper.make_node("Gemm", [f"{p}.x1", f"{p}.w1", f"{p}.b1"], [f"{p}.h"], transB=1, name=f"{p}.ff1"),
            helper.make_node("Div", [f"{p}.h", "sqrt2"], [f"{p}.h_s"], name=f"{p}.gelu_div"),
            helper.make_node("Erf", [f"{p}.h_s"], [f"{p}.h_erf"], name=f"{p}.gelu_erf"),
            helper.make_node("Add", [f"{p}.h_erf", "one"], [f"{p}.h_1p"], name=f"{p}.gelu_add"),
            helper.make_node("Mul", [f"{p}.h", f"{p}.h_1p"], [f"{p}.h_m"], name=f"{p}.gelu_mul"),
            helper.make_node("Mul", [f"{p}.h_m", "half"], [f"{p}.g"], name=f"{p}.gelu_half"),
            helper.make_node("Gemm", [f"{p}.g", f"{p}.w2", f"{p}.b2"], [f"{p}.ff"], transB=1, name=f"{p}.ff2"),
            helper.make_node("Add", [f"{p}.x1", f"{p}.ff"], [f"{p}.res"], name=f"{p}.residual2"),
            helper.make_node("LayerNormalization", [f"{p}.res", f"{p}.ln2_w", f"{p}.ln2_b"], [f"{p}.out"],
                             axis=-1, epsilon=lay.ln2_eps, name=f"{p}.norm2"),
        ]
        x = f"{p}.out"
    inits += [initializer("w_out", folded.w_out.T), initializer("b_out", folded.b_out)]
    if folded.mem_keys is None:
        nodes.append(helper.make_node("Gemm", [x, "w_out", "b_out"], [PROJECTED_NAME], transB=1, name=OUTPUT_NODE))
    else:  # arch "memory": + softmax(q̂·Kᵀ)·V over M learned slots
        q_in = "q_hat" if folded.config.normalize_input else INPUT_NAME
        assert folded.mem_values is not None, "fold sets mem_values with mem_keys"
        inits += [initializer("mem_keys", folded.mem_keys), initializer("mem_values", folded.mem_values)]
        nodes += [
            helper.make_node("Gemm", [x, "w_out", "b_out"], ["stack_out"], transB=1, name=OUTPUT_NODE),
            helper.make_node("Gemm", [q_in, "mem_keys"], ["mem_scores"], transB=1, name="mem_scores"),
            helper.make_node("Softmax", ["mem_scores"], ["mem_weights"], axis=-1, name="mem_softmax"),
            helper.make_node("MatMul", ["mem_weights", "mem_values"], ["mem_read"], name="mem_read"),
            helper.make_node("Add", ["stack_out", "mem_read"], [PROJECTED_NAME], name="mem_add"),
        ]
    graph = helper.make_graph(nodes, "h2l_student_folded", [query_input(d)], [output(PROJECTED_NAME, d)], inits)
    return make_model(graph, {**metadata, "h2l.role": "student", "h2l.folded": "true"})


def make_unfolded_student_model(model: ProjectionTransformer, metadata: dict[str, str]) -> onnx.ModelProto:
    """Export the literal torch graph with the dynamo exporter, scrubbed for byte-stable output.

    The legacy exporter fails on TransformerEncoder's eval fast path, so this
    uses ``dynamo=True``; node metadata (stack traces with absolute paths) and
    doc strings are dropped, the identity metadata set like the folded graph.  The caller's module is
    left as it was (a copy is put in eval mode on the CPU); no logger is touched.
    """
    import torch

    d = model.config.dim
    model = copy.deepcopy(model).eval().to("cpu")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (torch.zeros(2, d),), dynamo=True, external_data=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[PROJECTED_NAME],
            dynamic_shapes={"q": {0: torch.export.Dim(BATCH_DIM)}}, optimize=True, verbose=False)
    assert program is not None, "dynamo=True always returns an ONNXProgram"
    proto = program.model_proto
    scrub(proto)
    proto.graph.name = "h2l_student_unfolded"
    out = make_model(proto.graph, {**metadata, "h2l.role": "student", "h2l.folded": "false"})
    out.opset_import.extend(o for o in proto.opset_import if o.domain)
    out.functions.extend(proto.functions)
    return out


def scrub(proto: onnx.ModelProto) -> None:
    """Remove run-specific text (stack traces, paths) from a model in place: the doc strings and metadata of
    the model, every graph (the subgraphs of If/Loop/Scan attributes too, at any depth), node, attribute,
    tensor and value info, and of every local function."""
    proto.doc_string = ""
    del proto.metadata_props[:]
    todo: list = [proto.graph, *proto.functions]
    while todo:
        msg = todo.pop()
        msg.doc_string = ""
        if hasattr(msg, "metadata_props"):  # onnx >= 1.16: graphs, nodes, functions, value infos, tensors
            del msg.metadata_props[:]
        if isinstance(msg, onnx.GraphProto):
            todo += [*msg.node, *msg.value_info, *msg.input, *msg.output, *msg.initializer,
                     *(t for s in msg.sparse_initializer for t in (s.values, s.indices))]
        elif isinstance(msg, onnx.FunctionProto):
            todo += [*msg.node, *msg.attribute_proto, *getattr(msg, "value_info", ())]
        elif isinstance(msg, onnx.NodeProto):
            todo += list(msg.attribute)
        elif isinstance(msg, onnx.AttributeProto):
            todo += ([msg.g] if msg.HasField("g") else []) + list(msg.graphs) \
                + ([msg.t] if msg.HasField("t") else []) + list(msg.tensors)
