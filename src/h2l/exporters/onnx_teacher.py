"""The teacher as a hand-built ONNX graph, matrices frozen as initializers.

    q̂ = q / max(‖q‖, eps);  w = softmax(q̂ · K);  p = w · A,   K = Ĉᵀ/τ (pre-normalised, 1/τ folded)

The graph follows :func:`h2l.teacher.project_arrays` step for step, so the two
agree to float32 rounding, zero queries included.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..teacher import NORM_EPS, MultiHeadLDA
from . import INPUT_NAME, PROJECTED_NAME, WEIGHTS_NAME
from ._onnx_common import initializer, make_model, output, query_input


def make_teacher_model(teacher: MultiHeadLDA) -> onnx.ModelProto:
    """Build the teacher graph: ``query_embedding`` → ``projected_embedding``, ``routing_weights``."""
    n, d = teacher.n_heads, teacher.dim
    nodes = [
        helper.make_node("Mul", [INPUT_NAME, INPUT_NAME], ["q_sq"], name="square"),
        helper.make_node("ReduceSum", ["q_sq", "axis_1"], ["q_sumsq"], keepdims=1, name="sum_sq"),
        helper.make_node("Sqrt", ["q_sumsq"], ["q_norm"], name="norm"),
        helper.make_node("Max", ["q_norm", "norm_eps"], ["q_norm_floor"], name="norm_floor"),
        helper.make_node("Div", [INPUT_NAME, "q_norm_floor"], ["q_hat"], name="normalize"),
        helper.make_node("MatMul", ["q_hat", "keys"], ["logits"], name="scores"),
        helper.make_node("Softmax", ["logits"], [WEIGHTS_NAME], axis=-1, name="route"),
        helper.make_node("MatMul", [WEIGHTS_NAME, "answers"], [PROJECTED_NAME], name="project"),
    ]
    inits = [
        initializer("axis_1", np.array([1], np.int64)),
        initializer("norm_eps", np.array(NORM_EPS, np.float32)),
        initializer("keys", teacher.keys),
        initializer("answers", teacher.answers),
    ]
    graph = helper.make_graph(nodes, "h2l_teacher", [query_input(d)],
                              [output(PROJECTED_NAME, d), output(WEIGHTS_NAME, n)], inits)
    meta = {"h2l.role": "teacher", "h2l.name": teacher.name, "h2l.temperature": repr(teacher.temperature),
            "h2l.n_heads": str(n), "h2l.dim": str(d), "h2l.teacher_sha256": teacher.fingerprint()}
    return make_model(graph, meta)
