"""Teacher → ONNX → onnxruntime: graph checks, parity with numpy, bundle bytes."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import listing, rand_queries
from h2l.export import export_onnx
from h2l.exporters.onnx_common import check, serialize
from h2l.exporters.onnx_teacher import make_teacher_model
from h2l.model.synthetic import synthetic_teacher


def session(model):
    return ort.InferenceSession(serialize(model, "t"), providers=["CPUExecutionProvider"])


def test_graph_is_valid_single_file_with_identity(small_teacher):
    m = make_teacher_model(small_teacher)
    check(m)  # full_check=True
    props = {p.key: p.value for p in m.metadata_props}
    assert props["h2l.role"] == "teacher" and props["h2l.n_heads"] == "12" and props["h2l.dim"] == "32"
    assert float(props["h2l.temperature"]) == small_teacher.temperature and "h2l.teacher_sha256" in props
    inp = m.graph.input[0]
    assert inp.name == "query_embedding" and inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in m.graph.output] == ["projected_embedding", "routing_weights"]
    assert all(not t.HasField("data_location") or t.data_location == 0 for t in m.graph.initializer)


def test_onnx_equals_numpy_including_zero_query(small_teacher):
    s = session(make_teacher_model(small_teacher))
    q = rand_queries(33, small_teacher.dim)
    q[5] = 0
    p, w = s.run(None, {"query_embedding": q})
    rp, rw = small_teacher.project(q)
    assert np.abs(p - rp).max() <= 1e-5 and np.abs(w - rw).max() <= 1e-5
    assert np.allclose(p[5], small_teacher.answers.mean(0), atol=1e-6)


def test_export_writes_complete_verified_bundle(tmp_path, small_teacher):
    res = export_onnx(small_teacher, tmp_path / "b")
    names = listing(tmp_path)
    assert not [n for n in names if ".partial" in n], names
    m = res.manifest
    assert m["verification"]["passed"] and m["verification"]["provider"] == "cpu"
    assert m["teacher"]["n_heads"] == 12 and m["models"]["teacher"]["inputs"][0]["shape"] == ["batch", 32]
    on_disk = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert on_disk == m
    golden = np.load(tmp_path / "b" / "golden" / "inputs.npy")
    assert golden.dtype == np.dtype("<f4") and (golden[-1] == 0).all()


def test_export_is_byte_reproducible(tmp_path, small_teacher):
    export_onnx(small_teacher, tmp_path / "a")
    export_onnx(small_teacher, tmp_path / "b")
    for rel in listing(tmp_path / "a"):
        pa = tmp_path / "a" / rel
        if pa.is_file():
            assert pa.read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_existing_output_refused_then_forced(tmp_path, small_teacher):
    from h2l.errors import OutputError

    export_onnx(small_teacher, tmp_path / "b")
    with pytest.raises(OutputError, match="already exists"):
        export_onnx(small_teacher, tmp_path / "b")
    other = synthetic_teacher(5, 32, seed=9)
    export_onnx(other, tmp_path / "b", force=True)
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["teacher"]["n_heads"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_large_protobuf_is_refused_with_fix():
    from h2l.errors import OutputError

    class Huge:
        def ByteSize(self):
            return 2**31

    with pytest.raises(OutputError, match="over ONNX's 2 GiB single-file limit"):
        serialize(Huge(), "teacher.onnx")


def test_opset_and_ir_are_conservative(small_teacher):
    m = make_teacher_model(small_teacher)
    assert m.ir_version == 8 and m.opset_import[0].version == 18
    back = onnx.load_from_string(m.SerializeToString())  # parses back, checks, and is the same graph
    onnx.checker.check_model(back, full_check=True)
    assert back.graph == m.graph and back.SerializeToString() == m.SerializeToString()


def test_teacher_over_2gib_is_refused_before_building(tmp_path):
    from h2l.errors import OutputError
    from h2l.model.teacher import make_teacher

    n, d = 700_000, 384  # 2 × 1.07 GB of float32
    c = np.broadcast_to(np.float32(1.0), (n, d))
    t = make_teacher(np.ones((1, d), np.float32), np.ones((1, d), np.float32), 0.1)
    object.__setattr__(t, "centroids", c)  # a stand-in of the right size; nothing is built
    with pytest.raises(OutputError, match="would be 2.00 GiB, over ONNX's 2 GiB single-file limit"):
        export_onnx(t, tmp_path / "b")
    assert not (tmp_path / "b").exists()
