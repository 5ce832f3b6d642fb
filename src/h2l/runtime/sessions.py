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
from ..onnx_wire import WireError, split_model

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
#: onnxruntime's type strings → the dtype names manifests use (exporters.onnx_common.ONNX_DTYPES, numpy's spelling)
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(bfloat16)": "bfloat16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
               "tensor(int16)": "int16", "tensor(uint16)": "uint16", "tensor(int32)": "int32",
               "tensor(uint32)": "uint32", "tensor(int64)": "int64", "tensor(uint64)": "uint64",
               "tensor(bool)": "bool", "tensor(string)": "string"}


@dataclass(frozen=True)
class Runner:
    """A session plus the provider that actually runs it."""

    session: ort.InferenceSession
    provider: str  # "cpu" or "cuda"

    def run(self, q: np.ndarray) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        outs = self.session.run(names, {self.session.get_inputs()[0].name: q})
        return dict(zip(names, outs, strict=True))

    def run_batched(self, q: np.ndarray, batch: int) -> dict[str, np.ndarray]:
        parts = [self.run(q[i:i + batch]) for i in range(0, len(q), batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def session_options(threads: int | None = None, opt_level: str = "all", arena: bool = True) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = arena
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
    return so


def make_runner(model: str | Path | bytes, provider: str = "cpu", threads: int | None = None,
                opt_level: str = "all", arena: bool = True) -> Runner:
    """Open a session on ``provider`` ("cpu" or "cuda"); a CUDA fallback to CPU is a ProviderError.

    ``arena=False`` returns activation memory after every run (verify: one-off checks, large N) instead of
    keeping onnxruntime's CPU arena at its high-water mark (serving: no allocation per call)."""
    so = session_options(threads, opt_level, arena)
    src = lean_source(model, so) if isinstance(model, bytes) else str(model)
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


def lean_source(data: bytes, so: ort.SessionOptions) -> bytes:
    """The model without its large initializers, which ``so`` hands to onnxruntime as views of ``data``.

    onnxruntime copies each view once into the session; loading ``InferenceSession(data)`` instead makes
    two transient copies of the whole model on top of ``data`` (at N = 100k, 700 MB more at the peak).
    The outputs are bit-identical (tests/runtime/test_sessions.py).  Bytes that do not split (not
    well-formed protobuf) go to onnxruntime as they are, which then reports what is wrong.
    """
    try:
        small, split = split_model(data, "external")
    except WireError:
        return data
    if split:
        so.add_external_initializers([t.name for t in split],
                                     [ort.OrtValue.ortvalue_from_numpy(t.array(data)) for t in split])
    return small


@functools.cache
def cuda_status() -> tuple[bool, str]:
    """(usable, reason): tries a one-node session on the CUDA EP and checks what it got.

    The probe runs in a child process: a failed CUDA load makes onnxruntime's process-wide logger print
    errors, and silencing that here would change the caller's global severity (which ORT cannot read back).
    """
    if CUDA not in ort.get_available_providers():
        return False, f"this onnxruntime build ({ort.__version__}) has no CUDA provider; install onnxruntime-gpu"
    ok, reason = _probe_cuda()
    if ok:
        _preload_dlls()  # the child found CUDA/cuDNN through the nvidia-* wheels: load them here too
    return ok, reason


def _preload_dlls() -> None:
    import contextlib
    import io

    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels, when present
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                ort.preload_dlls()
            except Exception:  # noqa: BLE001 - missing wheels surface in the probe as a fallback
                pass


_PROBE = """
import sys
from h2l.runtime import sessions as s
import onnxruntime as ort
from onnx import TensorProto, helper
s._preload_dlls()
ort.set_default_logger_severity(4)  # this throwaway process only: the failure is reported by the parent
g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
m.ir_version = 8
try:
    sess = ort.InferenceSession(m.SerializeToString(), s.session_options(), providers=[s.CUDA, s.CPU])
except Exception as exc:
    print("error", str(exc).splitlines()[0][:160])
    sys.exit(0)
print("provider", sess.get_providers()[0])
"""


def _probe_cuda() -> tuple[bool, str]:
    import os
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[2])  # the folder holding this h2l package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    try:
        p = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"CUDA probe did not finish ({type(exc).__name__})"
    kind, _, detail = p.stdout.strip().partition(" ")
    if p.returncode != 0 or kind not in ("error", "provider"):
        return False, f"CUDA probe crashed (exit {p.returncode}: {p.stderr.strip()[-160:]})"
    if kind == "error":
        return False, f"CUDA session failed ({detail})"
    if detail != CUDA:
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
        for e, a in zip(exp, act, strict=True):
            for key in ("dtype", "shape"):
                if e[key] != a[key]:
                    diffs.append(f"{side[:-1]} {e['name']} {key} {a[key]} != manifest {e[key]}")
    return diffs
