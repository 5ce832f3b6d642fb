"""What export writes about its graphs (issue 20, item 15): the manifest's I/O contract names every dtype for
what it is, and scrub() removes run-specific text from subgraphs and functions too, not just the top graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf.message import Message
from onnx import TensorProto as T
from onnx import helper

from h2l.errors import OutputError
from h2l.exporters.onnx_common import ONNX_DTYPES, contract
from h2l.exporters.onnx_student import scrub
from h2l.runtime.sessions import contract_diff, contract_of


def _identity(elem: int, value_type=None) -> onnx.ModelProto:
    vi = value_type or (lambda name: helper.make_tensor_value_info(name, elem, ["batch", 3]))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [vi("x")], [vi("y")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


@pytest.mark.parametrize("elem, name", [
    (T.FLOAT, "float32"), (T.INT64, "int64"), (T.UINT8, "uint8"), (T.INT8, "int8"), (T.INT32, "int32"),
    (T.BOOL, "bool"), (T.FLOAT16, "float16"), (T.DOUBLE, "float64"), (T.INT16, "int16"), (T.UINT16, "uint16"),
    (T.UINT32, "uint32"), (T.UINT64, "uint64"), (T.STRING, "string"), (T.BFLOAT16, "bfloat16"),
])
def test_contract_names_each_dtype_as_onnxruntime_sees_it(elem, name):
    """The label is checked against the real session's own view (runtime.sessions.contract_of)."""
    model = _identity(elem)
    c = contract(model)
    assert c == {"inputs": [{"name": "x", "dtype": name, "shape": ["batch", 3]}],
                 "outputs": [{"name": "y", "dtype": name, "shape": ["batch", 3]}]}
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - a type this onnxruntime has no Identity kernel for
        pytest.skip(f"onnxruntime cannot run Identity on {name}: {str(exc)[:80]}")
    assert contract_diff(c, contract_of(sess)) == []


def test_every_mapped_dtype_is_a_distinct_name():
    assert len(set(ONNX_DTYPES.values())) == len(ONNX_DTYPES)


@pytest.mark.parametrize("case", ["complex64", "float8", "undefined", "sequence"])
def test_contract_refuses_what_it_cannot_name(case):
    if case == "sequence":
        model = _identity(0, lambda name: helper.make_tensor_sequence_value_info(name, T.FLOAT, None))
    else:
        model = _identity({"complex64": T.COMPLEX64, "float8": T.FLOAT8E4M3FN, "undefined": T.UNDEFINED}[case])
    with pytest.raises(OutputError, match="model I/O 'x' has ONNX .* which a bundle manifest cannot describe") as e:
        contract(model)
    assert e.value.exit_code == 4


# ------------------------------------------------------------------ scrub

def _texts(msg, path="model"):
    """Every non-empty doc_string and metadata_props anywhere in a protobuf message, by path."""
    for field, value in msg.ListFields():
        if field.name == "doc_string" and value:
            yield f"{path}.doc_string"
        if field.name == "metadata_props" and len(value):
            yield f"{path}.metadata_props"
        if field.type == field.TYPE_MESSAGE:
            items = [value] if isinstance(value, Message) else value
            for i, v in enumerate(items):
                yield from _texts(v, f"{path}.{field.name}[{i}]")


def _noisy(msg, tag: str):
    msg.doc_string = f"File /home/someone/{tag}.py, line 1"
    if hasattr(msg, "metadata_props"):
        msg.metadata_props.add(key="pkg.torch.stack_trace", value=f"/home/someone/{tag}.py")
    return msg


def _branchy_model() -> onnx.ModelProto:
    """y = x > 0 ? Inc(x) : x - 1, where Inc is a local function whose own node sits in an If; every part
    (graph, subgraph, node, attribute, value info, initializer, function) carries a doc string and metadata."""
    def vi(name):
        return _noisy(helper.make_tensor_value_info(name, T.FLOAT, [1]), f"vi_{name}")

    one = _noisy(helper.make_tensor("one", T.FLOAT, [1], [1.0]), "init")
    inc_body = helper.make_graph([_noisy(helper.make_node("Add", ["a", "c1"], ["b_then"]), "fn_add")], "inc_then",
                                 [], [vi("b_then")])
    inc_else = helper.make_graph([_noisy(helper.make_node("Identity", ["a"], ["b_else"]), "fn_id")], "inc_else",
                                 [], [vi("b_else")])
    fn = _noisy(helper.make_function("h2l.test", "Inc", ["a"], ["b"], [
        helper.make_node("Constant", [], ["c1"], value=helper.make_tensor("c", T.FLOAT, [1], [1.0])),
        helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("t", T.BOOL, [], [True])),
        _noisy(helper.make_node("If", ["yes"], ["b"], then_branch=_noisy(inc_body, "fn_then"),
                                else_branch=_noisy(inc_else, "fn_else")), "fn_if"),
    ], [helper.make_opsetid("", 18)]), "function")
    then_g = _noisy(helper.make_graph([_noisy(helper.make_node("Inc", ["x"], ["y_then"], domain="h2l.test"),
                                              "then_node")], "then", [], [vi("y_then")]), "then_graph")
    else_g = _noisy(helper.make_graph([_noisy(helper.make_node("Sub", ["x", "one"], ["y_else"]), "else_node")],
                                      "else", [], [vi("y_else")]), "else_graph")
    if_node = _noisy(helper.make_node("If", ["pos"], ["y"], then_branch=then_g, else_branch=else_g), "if")
    for a in if_node.attribute:
        _noisy(a, f"attr_{a.name}")
    graph = _noisy(helper.make_graph(
        [_noisy(helper.make_node("Greater", ["x", "zero"], ["pos_1"]), "greater"),
         helper.make_node("Squeeze", ["pos_1"], ["pos"]), if_node],
        "main", [vi("x")], [vi("y")],
        [one, _noisy(helper.make_tensor("zero", T.FLOAT, [1], [0.0]), "zero")]), "graph")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("h2l.test", 1)],
                              ir_version=8, functions=[fn])
    return _noisy(model, "model")


def test_scrub_reaches_subgraphs_and_functions_and_leaves_the_graph_working():
    model = _branchy_model()
    onnx.checker.check_model(model)
    before = sorted(_texts(model))
    assert any(".then_branch" in p or "attribute" in p for p in before) and any("functions" in p for p in before)

    def run(m, x):
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": np.array([x], np.float32)})[0][0]
    expected = run(model, 2.0), run(model, -2.0)
    assert expected == (3.0, -3.0)
    scrub(model)
    assert sorted(_texts(model)) == []
    onnx.checker.check_model(model)
    assert (run(model, 2.0), run(model, -2.0)) == expected
