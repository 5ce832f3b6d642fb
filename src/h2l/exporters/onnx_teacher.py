"""The teacher as a hand-built ONNX graph, matrices frozen as initializers.

    q̂ = q / max(‖q‖, eps);  w = softmax(q̂ · K);  p = w · A,   K = Ĉᵀ/τ (pre-normalised, 1/τ folded)

The graph follows :func:`h2l.model.teacher.project_arrays` step for step, so the two
agree to float32 rounding, zero queries included.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import IntegrityError
from ..model.teacher import Teacher
from ..onnx_wire import WireError, initializer_arrays
from . import INPUT_NAME, PROJECTED_NAME, WEIGHTS_NAME
from .onnx_common import initializer, load_model, make_model, normalize_nodes, output, query_input


def make_teacher_model(teacher: Teacher) -> onnx.ModelProto:
    """Build the teacher graph: ``query_embedding`` → ``projected_embedding``, ``routing_weights``."""
    n, d = teacher.n_heads, teacher.dim
    nodes, inits = normalize_nodes(INPUT_NAME, "q_hat")
    nodes += [
        helper.make_node("MatMul", ["q_hat", "keys"], ["logits"], name="scores"),
        helper.make_node("Softmax", ["logits"], [WEIGHTS_NAME], axis=-1, name="route"),
        helper.make_node("MatMul", [WEIGHTS_NAME, "answers"], [PROJECTED_NAME], name="project"),
    ]
    inits += [
        initializer("keys", teacher.keys),
        initializer("answers", teacher.answers),
    ]
    graph = helper.make_graph(nodes, "h2l_teacher", [query_input(d)],
                              [output(PROJECTED_NAME, d), output(WEIGHTS_NAME, n)], inits)
    meta = {"h2l.role": "teacher", "h2l.name": teacher.name, "h2l.temperature": repr(teacher.temperature),
            "h2l.n_heads": str(n), "h2l.dim": str(d), "h2l.teacher_sha256": teacher.fingerprint()}
    return make_model(graph, meta)


def teacher_arrays(source, name: str = "teacher.onnx") -> tuple[np.ndarray, np.ndarray]:
    """The frozen keys (Ĉᵀ/τ) and answers read back from teacher.onnx (bytes or a path): the numpy reference's inputs.

    From bytes they are read-only views of those bytes (no copy: at N = 100k each is 150 MB)."""
    if isinstance(source, bytes):
        try:
            held = initializer_arrays(source, ("keys", "answers"))
        except WireError:
            held = {}
        if len(held) == 2:
            return held["keys"], held["answers"]
    model = load_model(source, name)
    if not isinstance(source, bytes):
        name = getattr(source, "name", name)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    if "keys" not in inits or "answers" not in inits:
        raise IntegrityError(f"{name} lacks the keys/answers initializers of an h2l teacher",
                             "re-export the bundle")
    return inits["keys"], inits["answers"]
