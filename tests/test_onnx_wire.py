"""h2l.onnx_wire: large initializers found in a model's bytes, viewed without copies, handed to onnxruntime.

Loading this way must change nothing a user can see: every initializer equals what onnx parses, and every
session output is bit-identical to ``InferenceSession(bytes)``.  The guards must still refuse what they
refused when the tensor is large enough to be split out (a declared shape its bytes do not fill)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from h2l.bundle.guards import check_onnx
from h2l.errors import IntegrityError
from h2l.export import export_onnx
from h2l.model.synthetic import synthetic_teacher
from h2l.onnx_wire import SPLIT_BYTES, WireError, initializer_arrays, split_model
from h2l.runtime.sessions import make_runner

N, D = 200, 96  # keys of 76.8 kB: over SPLIT_BYTES, so the teacher and routed graphs are split


@pytest.fixture(scope="module")
def big_bundle(tmp_path_factory):
    t = synthetic_teacher(N, D, temperature=0.05, seed=4)
    assert t.keys.nbytes > SPLIT_BYTES
    out = tmp_path_factory.mktemp("wire") / "b"
    export_onnx(t, out, routed=True, candidates=16)
    return out


def _models(big_bundle, rt_bundle):
    return [big_bundle / "teacher.onnx", big_bundle / "teacher_routed.onnx", rt_bundle / "student.onnx"]


def _plain(data: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def test_views_equal_what_onnx_parses(big_bundle, rt_bundle):
    for path in _models(big_bundle, rt_bundle):
        data = path.read_bytes()
        parsed = {t.name: numpy_helper.to_array(t) for t in onnx.load_model_from_string(data).graph.initializer}
        views = initializer_arrays(data)
        assert views and set(views) <= set(parsed)
        for name, v in views.items():
            assert v.dtype == parsed[name].dtype and v.shape == parsed[name].shape, name
            assert np.array_equal(v, parsed[name]), name
            assert not v.flags.writeable  # a view of the verified bytes, never a copy that could drift


@pytest.mark.parametrize("min_bytes", [0, SPLIT_BYTES])  # 0: every tensor onnxruntime allows (≥ 128 bytes)
def test_split_sessions_are_bit_identical(big_bundle, rt_bundle, min_bytes):
    q = np.random.default_rng(0).standard_normal((9, D)).astype(np.float32)
    for path in _models(big_bundle, rt_bundle):
        data = path.read_bytes()
        small, split = split_model(data, "external", min_bytes=min_bytes)
        assert len(small) < len(data) or not split
        if path.parent == big_bundle:
            assert {"answers"} <= {t.name for t in split}  # the N-sized tensors left the model
        left = onnx.load_model_from_string(small).graph.initializer
        assert all(len(t.raw_data) < max(min_bytes, 128) for t in left)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.add_external_initializers([t.name for t in split],
                                     [ort.OrtValue.ortvalue_from_numpy(t.array(data)) for t in split])
        lean = ort.InferenceSession(small, so, providers=["CPUExecutionProvider"])
        plain = _plain(data)
        x = q if plain.get_inputs()[0].shape[1] == D else q[:, :48]
        a = plain.run(None, {plain.get_inputs()[0].name: x})
        b = lean.run(None, {lean.get_inputs()[0].name: x})
        for u, v in zip(a, b, strict=True):
            assert u.dtype == v.dtype and np.array_equal(u, v), path.name


def test_make_runner_from_bytes_matches_a_path_session(big_bundle):
    q = np.random.default_rng(1).standard_normal((5, D)).astype(np.float32)
    for name in ("teacher.onnx", "teacher_routed.onnx"):
        path = big_bundle / name
        got = make_runner(path.read_bytes()).run(q)
        want = make_runner(path).run(q)
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[k], want[k]) for k in got)


def test_malformed_bytes_raise_wire_error():
    data = (b"\x3a\xff\xff\xff\x0f" + b"x" * 10)  # field 7, length 2^32-1, past the end
    with pytest.raises(WireError):
        split_model(data)
    with pytest.raises(WireError):
        split_model(b"\x3a")  # a key, then nothing
    with pytest.raises(WireError):
        split_model(b"\x3b\x01")  # wire type 3 (groups): never ONNX


def _rewrite_big(path, change) -> None:
    proto = onnx.load(str(path))
    t = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    assert len(t.raw_data) >= SPLIT_BYTES
    change(t)
    path.write_bytes(proto.SerializeToString())


@pytest.mark.parametrize("change, needle", [
    (lambda t: t.dims.__setitem__(0, 2**40), "declares shape [1099511627776"),
    (lambda t: setattr(t, "raw_data", t.raw_data[:-4]), "(an oversize or truncated tensor)"),
    (lambda t: t.dims.__setitem__(0, -3), "has a negative dimension"),
])
def test_guard_refuses_a_split_tensor_whose_bytes_do_not_fill_its_shape(big_bundle, tmp_path, change, needle):
    path = tmp_path / "teacher.onnx"
    path.write_bytes((big_bundle / "teacher.onnx").read_bytes())
    _rewrite_big(path, change)
    with pytest.raises(IntegrityError) as e:
        check_onnx(tmp_path, "teacher.onnx", {"teacher.onnx": path.stat().st_size}, path.read_bytes())
    assert needle in e.value.message and "initializer 'keys'" in e.value.message


def test_guard_refuses_bytes_cut_inside_a_split_tensor(big_bundle, tmp_path):
    data = (big_bundle / "teacher.onnx").read_bytes()
    keys = next(t for t in split_model(data)[1] if t.name == "keys")
    cut = data[:keys.offset + keys.length // 2]
    with pytest.raises(IntegrityError) as e:
        check_onnx(tmp_path, "teacher.onnx", {"teacher.onnx": len(cut)}, cut)
    assert "is not a readable ONNX model" in e.value.message


def test_guard_passes_the_real_models(big_bundle):
    for name in ("teacher.onnx", "teacher_routed.onnx"):
        data = (big_bundle / name).read_bytes()
        check_onnx(big_bundle, name, {name: len(data)}, data)
