"""The runtime layer on its own: sessions from bytes or paths, providers, the I/O contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import rand_queries
from h2l.errors import ProviderError
from h2l.runtime.sessions import contract_diff, contract_of, cuda_status, library_path, make_runner, session_options


def test_runner_from_bytes_and_from_path_agree(tmp_path, small_teacher, teacher_bytes):
    (tmp_path / "t.onnx").write_bytes(teacher_bytes)
    q = rand_queries(7, small_teacher.dim)
    a = make_runner(teacher_bytes).run(q)
    b = make_runner(tmp_path / "t.onnx").run(q)
    assert set(a) == {"projected_embedding", "routing_weights"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_allclose(a["projected_embedding"], small_teacher.project(q)[0], atol=1e-5)


def test_run_batched_equals_one_run(small_teacher, teacher_bytes):
    r = make_runner(teacher_bytes, threads=1)
    q = rand_queries(10, small_teacher.dim, seed=4)
    whole = r.run(q)
    for batch in (1, 3, 10):
        parts = r.run_batched(q, batch)
        np.testing.assert_allclose(parts["projected_embedding"], whole["projected_embedding"], atol=1e-6)


def test_session_options():
    so = session_options(threads=2, opt_level="basic")
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1 and so.log_severity_level == 3
    with pytest.raises(KeyError):
        session_options(opt_level="fastest")


def test_contract_of_and_diff(small_teacher, teacher_bytes):
    got = contract_of(make_runner(teacher_bytes).session)
    d, n = small_teacher.dim, small_teacher.n_heads
    assert got["inputs"] == [{"name": "query_embedding", "dtype": "float32", "shape": ["batch", d]}]
    assert got["outputs"][1] == {"name": "routing_weights", "dtype": "float32", "shape": ["batch", n]}
    assert contract_diff(got, got) == []
    renamed = {**got, "outputs": [{**got["outputs"][0], "name": "y"}, got["outputs"][1]]}
    assert contract_diff(renamed, got) and "names" in contract_diff(renamed, got)[0]
    wider = {**got, "inputs": [{**got["inputs"][0], "shape": ["batch", d + 1]}]}
    assert contract_diff(wider, got) == [f"input query_embedding shape ['batch', {d}] != manifest ['batch', {d + 1}]"]


def test_unknown_provider_and_cuda_where_unusable(teacher_bytes):
    with pytest.raises(ProviderError, match="unknown provider"):
        make_runner(teacher_bytes, "tpu")
    ok, reason = cuda_status()
    if ok:
        assert make_runner(teacher_bytes, "cuda").provider == "cuda"
    else:
        with pytest.raises(ProviderError, match="CUDA requested but unusable"):
            make_runner(teacher_bytes, "cuda")
        assert reason


def test_bad_bytes_do_not_load():
    """onnxruntime itself refuses them (its own InvalidProtobuf, which callers map): not a TypeError or
    AttributeError of ours on the way there, which a bare ``pytest.raises(Exception)`` would also accept."""
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf

    with pytest.raises(InvalidProtobuf, match="protobuf parsing failed"):
        make_runner(b"not an onnx model")


def test_library_path_points_at_the_wheels_library():
    """The path is the wheel's own library and it loads: it exports OrtGetApiBase, the one symbol the Rust and
    Go runtimes look up in it, and reports the wheel's version."""
    import ctypes

    import onnxruntime as ort

    path = library_path()
    assert path and Path(path).is_file() and Path(path).parent == Path(ort.__file__).parent / "capi", path
    lib = ctypes.CDLL(path)
    lib.OrtGetApiBase.restype = ctypes.POINTER(ctypes.c_void_p * 2)  # {GetApi, GetVersionString}
    get_version = ctypes.CFUNCTYPE(ctypes.c_char_p)(lib.OrtGetApiBase().contents[1])
    assert get_version().decode() == ort.__version__
