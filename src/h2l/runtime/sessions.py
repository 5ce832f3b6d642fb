"""onnxruntime sessions with honest provider handling, and the I/O contract of a session.

onnxruntime-gpu lists CUDAExecutionProvider as *available* even on a machine
without a GPU and then silently runs on CPU.  CUDA counts here only when the
created session reports ``get_providers()[0] == "CUDAExecutionProvider"``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ProviderError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}


@dataclass(frozen=True)
class Runner:
    """A session plus the provider that actually runs it."""

    session: ort.InferenceSession
    provider: str  # "cpu" or "cuda"

    def run(self, q: np.ndarray) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        outs = self.session.run(names, {self.session.get_inputs()[0].name: q})
        return dict(zip(names, outs))

    def run_batched(self, q: np.ndarray, batch: int) -> dict[str, np.ndarray]:
        parts = [self.run(q[i:i + batch]) for i in range(0, len(q), batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def session_options(threads: int | None = None, opt_level: str = "all",
                    optimized_path: Path | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return so


def make_runner(model: str | Path | bytes, provider: str = "cpu", threads: int | None = None,
                opt_level: str = "all") -> Runner:
    """Open a session on ``provider`` ("cpu" or "cuda"); a CUDA fallback to CPU is a ProviderError."""
    so = session_options(threads, opt_level)
    src = model if isinstance(model, bytes) else str(model)
    if provider == "cpu":
        return Runner(ort.InferenceSession(src, so, providers=[CPU]), "cpu")
    if provider != "cuda":
        raise ProviderError(f"unknown provider {provider!r}", "use cpu or cuda")
    ok, reason = cuda_status()
    if not ok:
        raise ProviderError(f"CUDA requested but unusable: {reason}", ProviderError.default_fix)
    sess = ort.InferenceSession(src, so, providers=[(CUDA, {"use_tf32": 0}), CPU])
    if sess.get_providers()[0] != CUDA:  # pragma: no cover - needs a GPU that fails late
        raise ProviderError(f"CUDA session fell back to {sess.get_providers()[0]}", ProviderError.default_fix)
    return Runner(sess, "cuda")


@functools.cache
def cuda_status() -> tuple[bool, str]:
    """(usable, reason): tries a one-node session on the CUDA EP and checks what it got."""
    if CUDA not in ort.get_available_providers():
        return False, f"this onnxruntime build ({ort.__version__}) has no CUDA provider; install onnxruntime-gpu"
    ort.set_default_logger_severity(4)  # the failed CUDA load is reported by us, not by ORT's logger
    try:
        return _probe_cuda()
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default (warning)


def _probe_cuda() -> tuple[bool, str]:
    import contextlib
    import io

    from onnx import TensorProto, helper

    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels, when present
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                ort.preload_dlls()
            except Exception:  # noqa: BLE001 - missing wheels surface below as a fallback
                pass
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    try:
        sess = ort.InferenceSession(m.SerializeToString(), session_options(), providers=[CUDA, CPU])
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return False, f"CUDA session failed ({str(exc).splitlines()[0][:160]})"
    if sess.get_providers()[0] != CUDA:
        return False, "onnxruntime fell back to CPU (no usable GPU or CUDA/cuDNN libraries)"
    return True, "ok"


def library_path() -> str:
    """The libonnxruntime shared library of the installed wheel (for ORT_DYLIB_PATH in Rust and Go)."""
    capi = Path(ort.__file__).parent / "capi"
    libs = sorted(capi.glob("libonnxruntime.so.1*")) or sorted(capi.glob("libonnxruntime*.dylib")) \
        or sorted(capi.glob("onnxruntime.dll"))
    return str(libs[-1]) if libs else ""


def contract_of(session: ort.InferenceSession) -> dict[str, list[dict]]:
    """The session's I/O as manifest-style dicts: name, dtype, shape (symbolic dims as names)."""
    def one(arg) -> dict:
        shape = [d if isinstance(d, int) else str(d) for d in arg.shape]
        return {"name": arg.name, "dtype": _ORT_DTYPES.get(arg.type, arg.type), "shape": shape}
    return {"inputs": [one(a) for a in session.get_inputs()], "outputs": [one(a) for a in session.get_outputs()]}


def contract_diff(expected: dict, actual: dict) -> list[str]:
    """Human-readable differences between two I/O contracts (empty when they agree)."""
    diffs = []
    for side in ("inputs", "outputs"):
        exp, act = expected.get(side, []), actual.get(side, [])
        if [e["name"] for e in exp] != [a["name"] for a in act]:
            diffs.append(f"{side} names {[a['name'] for a in act]} != manifest {[e['name'] for e in exp]}")
            continue
        for e, a in zip(exp, act):
            for key in ("dtype", "shape"):
                if e[key] != a[key]:
                    diffs.append(f"{side[:-1]} {e['name']} {key} {a[key]} != manifest {e[key]}")
    return diffs
