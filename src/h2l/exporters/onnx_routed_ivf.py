"""``--router ivf`` as an ONNX graph: group scores → TopK groups → padded members → exact softmax → estimate.

Mirrors :func:`h2l.model.routing_ivf.route_ivf`.  Same outputs as the screen
router except the last, ``neglected_mass_estimate``: a heuristic, not a bound.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..model.routing import EXP_FLOOR
from ..model.routing_ivf import IvfIndex
from . import BATCH_DIM, INPUT_NAME, PROJECTED_NAME
from .onnx_common import initializer, make_model, normalize_nodes, output, query_input
from .onnx_routed import ESTIMATE_NAME, TOP_HEADS, TOP_WEIGHTS, rescore_nodes

IVF_ARRAYS = ("group_keys", "group_mask", "group_sizes", "members", "member_mask", "rows", "answers", "probes")


def make_ivf_model(index: IvfIndex, metadata: dict[str, str]) -> onnx.ModelProto:
    d, k = int(index.rows.shape[1]), index.candidates
    h = helper.make_node
    nodes, inits = normalize_nodes(INPUT_NAME, "q_hat")
    nodes += [
        h("MatMul", ["q_hat", "group_keys"], ["gs0"], name="group_scores"),
        h("Add", ["gs0", "group_mask"], ["gs"], name="mask_empty_groups"),
        h("TopK", ["gs", "probes"], ["gs_top", "probed"], axis=-1, largest=1, sorted=1, name="probe"),
        h("Gather", ["members", "probed"], ["cand3"], axis=0, name="cand3"),
        h("Reshape", ["cand3", "flat_shape"], ["cand"], name="cand"),
        h("Gather", ["member_mask", "probed"], ["mask3"], axis=0, name="mask3"),
        h("Reshape", ["mask3", "flat_shape"], ["mask"], name="mask"),
        *rescore_nodes(mask="mask"),
        h("Sub", ["gs", "x_max"], ["g_shift"], name="g_shift"),
        h("Max", ["g_shift", "exp_floor"], ["g_shift_floor"], name="g_shift_floor"),
        h("Exp", ["g_shift_floor"], ["g_exp"], name="g_exp"),
        h("Mul", ["g_exp", "group_sizes"], ["g_mass"], name="g_mass"),
        h("Shape", ["probed"], ["p_shape"], name="p_shape"),
        h("ConstantOfShape", ["p_shape"], ["p_zeros"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]),
          name="p_zeros"),
        h("ScatterElements", ["g_mass", "probed", "p_zeros"], ["g_skipped"], axis=1, name="drop_probed"),
        h("ReduceSum", ["g_skipped", "axis_1"], ["skipped"], keepdims=1, name="skipped"),
        h("Div", ["z", "skipped"], ["z_over_u"], name="z_over_u"),
        h("Add", ["one", "z_over_u"], ["denom"], name="denom"),
        h("Div", ["one", "denom"], ["est_col"], name="est_col"),
        h("Squeeze", ["est_col", "axis_1"], [ESTIMATE_NAME], name="estimate"),
    ]
    inits += [
        initializer("group_keys", index.group_keys), initializer("group_mask", index.group_mask),
        initializer("group_sizes", index.group_sizes), initializer("members", index.members),
        initializer("member_mask", index.member_mask), initializer("rows", index.rows),
        initializer("answers", index.answers), initializer("probes", np.array([index.probes], np.int64)),
        initializer("k", np.array([k], np.int64)), initializer("flat_shape", np.array([0, -1], np.int64)),
        initializer("axis_2", np.array([2], np.int64)), initializer("one", np.array([1.0], np.float32)),
        initializer("exp_floor", np.array([EXP_FLOOR], np.float32)),
    ]
    outputs = [output(PROJECTED_NAME, d),
               helper.make_tensor_value_info(TOP_HEADS, TensorProto.INT64, [BATCH_DIM, k]),
               output(TOP_WEIGHTS, k),
               helper.make_tensor_value_info(ESTIMATE_NAME, TensorProto.FLOAT, [BATCH_DIM])]
    graph = helper.make_graph(nodes, "h2l_routed_teacher_ivf", [query_input(d)], outputs, inits)
    meta = {"h2l.role": "routed_teacher", "h2l.router": "ivf", "h2l.candidates": str(k), "h2l.bound": "estimate",
            "h2l.groups": str(index.members.shape[0]), "h2l.probes": str(index.probes), **metadata}
    return make_model(graph, meta)


def ivf_index_from_arrays(arrays: dict[str, np.ndarray]) -> IvfIndex:
    """The index a shipped ivf graph holds (verify runs the numpy reference on exactly these)."""
    return IvfIndex(arrays["group_keys"], arrays["group_mask"], arrays["group_sizes"], arrays["members"],
                    arrays["member_mask"], arrays["rows"], arrays["answers"], int(arrays["probes"].ravel()[0]))
