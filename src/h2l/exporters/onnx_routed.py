"""The routed teacher as a hand-built ONNX graph: int8 screen → TopK → exact re-scoring → softmax → bound.

    q̂ = q / max(‖q‖, eps);  7-bit q̃ = s_q·Q_q;  u = σ ⊙ (s_q·(Q_q·W) + ρ‖q̃‖₁) + (‖q̂−q̃‖₂ + slack)·max‖K‖
    C = TopK(u, K);  x = q̂·K_C;  w = softmax(x);  p = w·A_C;
    bound = U/(Z_C + U),  U = Σ_{i∉C} e^{max(u_i − max x, −60)}

Every step mirrors :func:`h2l.model.routing.route`.  The only O(N) tensors are
internal (the screen and its exponentials); every output is O(K) or O(d).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..model.routing import EXP_FLOOR, QUERY_LEVELS, QUERY_ZERO_POINT, SCALE_FLOOR, ScreenIndex
from ..onnx_wire import WireError, initializer_arrays, split_model
from . import BATCH_DIM, INPUT_NAME, PROJECTED_NAME
from .onnx_common import initializer, load_model, make_model, normalize_nodes, output, query_input

ROUTED_FILE = "teacher_routed.onnx"
TOP_HEADS = "top_heads"
TOP_WEIGHTS = "top_weights"
BOUND_NAME = "neglected_mass_bound"
ESTIMATE_NAME = "neglected_mass_estimate"  # --router ivf: an estimate, never a bound


def _f(x: float) -> np.ndarray:
    return np.array(x, np.float32)


def large_tables(index: ScreenIndex) -> dict[str, np.ndarray]:
    """The routed graph's N-sized initializers by name (what ``placeholders`` leaves out and join_model fills)."""
    return {"screen_weights": index.weights, "screen_scale": index.scale, "rows": index.rows,
            "answers": index.answers}


def _placeholder(name: str, arr: np.ndarray) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape)
    t.raw_data = b""  # present and empty: h2l.onnx_wire.join_model fills it
    return t


def make_routed_model(index: ScreenIndex, k: int, metadata: dict[str, str],
                      placeholders: bool = False) -> onnx.ModelProto:
    """Build ``teacher_routed.onnx`` for ``index`` with K = ``k`` candidates (clamped to N).

    ``placeholders``: the N-sized initializers (:func:`large_tables`) are left empty, to be joined into the
    serialized bytes (:func:`h2l.onnx_wire.join_model`) without a second in-memory copy of the model."""
    n, d = index.n_heads, index.dim
    k = max(1, min(int(k), n))
    large = large_tables(index)
    big = lambda name: (_placeholder if placeholders else initializer)(name, large[name])  # noqa: E731
    h = helper.make_node
    nodes, inits = normalize_nodes(INPUT_NAME, "q_hat")
    nodes += [
        # 7-bit query, per row
        h("Abs", ["q_hat"], ["q_abs"], name="q_abs"),
        h("ReduceMax", ["q_abs", "axis_1"], ["q_peak"], keepdims=1, name="q_peak"),
        h("Max", ["q_peak", "scale_floor"], ["q_peak_floor"], name="q_peak_floor"),
        h("Div", ["q_peak_floor", "q_levels"], ["q_scale"], name="q_scale"),
        h("Div", ["q_hat", "q_scale"], ["q_ratio"], name="q_ratio"),
        h("Round", ["q_ratio"], ["q_round"], name="q_round"),
        h("Clip", ["q_round", "q_min", "q_max"], ["q_int"], name="q_int"),
        h("Add", ["q_int", "q_zero_f"], ["q_shift"], name="q_shift"),
        h("Cast", ["q_shift"], ["q_u8"], to=TensorProto.UINT8, name="q_u8"),
        h("Mul", ["q_int", "q_scale"], ["q_tilde"], name="q_tilde"),
        h("Sub", ["q_hat", "q_tilde"], ["q_res"], name="q_res"),
        h("Mul", ["q_res", "q_res"], ["q_res_sq"], name="q_res_sq"),
        h("ReduceSum", ["q_res_sq", "axis_1"], ["q_res_ss"], keepdims=1, name="q_res_ss"),
        h("Sqrt", ["q_res_ss"], ["q_err"], name="q_err"),
        h("Abs", ["q_tilde"], ["q_tilde_abs"], name="q_tilde_abs"),
        h("ReduceSum", ["q_tilde_abs", "axis_1"], ["q_l1"], keepdims=1, name="q_l1"),
        # the screen: exact integer dot products, then the proven upper bound per head
        h("MatMulInteger", ["q_u8", "screen_weights", "q_zero"], ["dot_i32"], name="screen"),
        h("Cast", ["dot_i32"], ["dot"], to=TensorProto.FLOAT, name="dot"),
        h("Mul", ["dot", "q_scale"], ["t1"], name="t1"),
        h("Mul", ["q_l1", "rho"], ["l1_rho"], name="l1_rho"),
        h("Add", ["t1", "l1_rho"], ["t2"], name="t2"),
        h("Mul", ["t2", "screen_scale"], ["t3"], name="t3"),
        h("Add", ["q_err", "slack"], ["m1"], name="m1"),
        h("Mul", ["m1", "key_norm"], ["margin"], name="margin"),
        h("Add", ["t3", "margin"], ["upper"], name="upper"),
        h("TopK", ["upper", "k"], ["upper_top", "cand"], axis=-1, largest=1, sorted=1, name="candidates"),
        # exact re-scoring with the flat teacher's float32 keys, sorted by weight
        *rescore_nodes(),
        # the bound: upper bounds of every skipped head against the exact candidate mass
        h("Sub", ["upper", "x_max"], ["u_shift"], name="u_shift"),
        h("Max", ["u_shift", "exp_floor"], ["u_shift_floor"], name="u_shift_floor"),
        h("Exp", ["u_shift_floor"], ["u_exp"], name="u_exp"),
        h("Shape", [TOP_HEADS], ["k_shape"], name="k_shape"),
        h("ConstantOfShape", ["k_shape"], ["k_zeros"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]),
          name="k_zeros"),
        h("ScatterElements", ["u_exp", TOP_HEADS, "k_zeros"], ["u_skipped"], axis=1, name="drop_candidates"),
        h("ReduceSum", ["u_skipped", "axis_1"], ["skipped"], keepdims=1, name="skipped"),
        h("Div", ["z", "skipped"], ["z_over_u"], name="z_over_u"),
        h("Add", ["one", "z_over_u"], ["denom"], name="denom"),
        h("Div", ["one", "denom"], ["bound_col"], name="bound_col"),
        h("Squeeze", ["bound_col", "axis_1"], [BOUND_NAME], name="bound"),
    ]
    inits += [
        initializer("scale_floor", _f(SCALE_FLOOR)), initializer("q_levels", _f(QUERY_LEVELS)),
        initializer("q_min", _f(-QUERY_LEVELS)), initializer("q_max", _f(QUERY_LEVELS)),
        initializer("q_zero_f", _f(QUERY_ZERO_POINT)), initializer("q_zero", np.array(QUERY_ZERO_POINT, np.uint8)),
        big("screen_weights"), big("screen_scale"),
        initializer("rho", _f(index.rho)), initializer("slack", _f(index.slack)),
        initializer("key_norm", _f(index.key_norm)), initializer("k", np.array([k], np.int64)),
        initializer("axis_2", np.array([2], np.int64)), initializer("one", _f(1.0)),
        initializer("exp_floor", _f(EXP_FLOOR)),
        big("rows"), big("answers"),
    ]
    outputs = [output(PROJECTED_NAME, d),
               helper.make_tensor_value_info(TOP_HEADS, TensorProto.INT64, [BATCH_DIM, k]),
               output(TOP_WEIGHTS, k),
               helper.make_tensor_value_info(BOUND_NAME, TensorProto.FLOAT, [BATCH_DIM])]
    graph = helper.make_graph(nodes, "h2l_routed_teacher", [query_input(d)], outputs, inits)
    meta = {"h2l.role": "routed_teacher", "h2l.router": "screen", "h2l.candidates": str(k), "h2l.bound": "proven",
            "h2l.n_heads": str(n), "h2l.dim": str(d), **metadata}
    return make_model(graph, meta)


def rescore_nodes(mask: str | None = None) -> list:
    """Exact re-scoring of the candidates ``cand`` with the float32 ``rows``, sorted by weight, their softmax
    and the projection: the steps the screen and ivf graphs share (``model.routing.rescore`` in numpy).

    ``mask`` (ivf: -inf on padded members) is added to the scores before sorting."""
    h = helper.make_node
    raw = "x0" if mask else "x"
    nodes = [
        h("Gather", ["rows", "cand"], ["cand_rows"], axis=0, name="cand_rows"),
        h("Unsqueeze", ["q_hat", "axis_2"], ["q_col"], name="q_col"),
        h("MatMul", ["cand_rows", "q_col"], ["x_col"], name="rescore"),
        h("Squeeze", ["x_col", "axis_2"], [raw], name=raw),
    ]
    if mask:
        nodes.append(h("Add", [raw, mask], ["x"], name="mask_padding"))
    return nodes + [
        h("TopK", ["x", "k"], ["x_sorted", "order"], axis=-1, largest=1, sorted=1, name="by_weight"),
        h("GatherElements", ["cand", "order"], [TOP_HEADS], axis=1, name="top_heads"),
        h("ReduceMax", ["x_sorted", "axis_1"], ["x_max"], keepdims=1, name="x_max"),
        h("Sub", ["x_sorted", "x_max"], ["x_shift"], name="x_shift"),
        h("Exp", ["x_shift"], ["x_exp"], name="x_exp"),
        h("ReduceSum", ["x_exp", "axis_1"], ["z"], keepdims=1, name="z"),
        h("Div", ["x_exp", "z"], [TOP_WEIGHTS], name="top_weights"),
        h("Gather", ["answers", TOP_HEADS], ["cand_answers"], axis=0, name="cand_answers"),
        h("Unsqueeze", [TOP_WEIGHTS, "axis_1"], ["w_row"], name="w_row"),
        h("MatMul", ["w_row", "cand_answers"], ["p_row"], name="project"),
        h("Squeeze", ["p_row", "axis_1"], [PROJECTED_NAME], name="projected"),
    ]


def routed_size(n: int, d: int) -> int:
    """Bytes of the routed graph's initializers: int8 screen, float32 rows and answers."""
    return n * d * 9 + n * 4


def routed_arrays(path) -> dict[str, np.ndarray]:
    """Every initializer of a routed graph by name (what verify compares with the teacher); from bytes, the large
    ones are read-only views of them."""
    if isinstance(path, bytes):
        try:
            held = initializer_arrays(path)
        except WireError:
            held = {}
        model = load_model(split_model(path, "placeholder")[0] if held else path, ROUTED_FILE)
        return {**{t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name not in held}, **held}
    model = load_model(path, ROUTED_FILE)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
