"""CUDA-graph serving sessions: onnxruntime's CUDA EP with ``enable_cuda_graph``, I/O bound to fixed buffers.

A CUDA graph replays a captured run's kernels with one launch, which is what a
launch-bound teacher (78–127 µs on an H200 for 5 µs of memory traffic, issue 12)
needs.  onnxruntime captures only when every node runs on the CUDA EP, the
inputs and outputs are bound to device buffers whose addresses never change,
and the shapes are fixed: so a :class:`GraphSession` serves one batch size,
copies each query into its pre-allocated input in place and replays.

Setting the option proves nothing (a CPU-placed node or a rejected capture
falls back to ordinary runs).  :func:`replay_evidence` measures it: with
onnxruntime's profiler on, a replayed run executes no per-node kernels, so node
events stop after the capture runs; it also times graph vs plain I/O binding.

Not run on this project's CPU-only machine; written for ``scripts/gpu_check.sh``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ProviderError
from .sessions import CUDA, cuda_status, session_options

_NP = {"tensor(float)": np.float32, "tensor(int64)": np.int64}


@dataclass(frozen=True, eq=False)
class GraphSession:
    """One fixed-batch CUDA session with pre-allocated, bound input and outputs."""

    session: ort.InferenceSession
    binding: ort.IOBinding
    input: ort.OrtValue
    outputs: dict[str, ort.OrtValue]
    batch: int
    graph: bool  # enable_cuda_graph was requested
    options: dict = field(default_factory=dict)

    def replay(self, q: np.ndarray) -> None:
        """Copy ``q`` into the bound input and run (a graph replay once captured); outputs stay on the GPU."""
        if q.shape != tuple(self.input.shape()):
            raise ProviderError(f"this CUDA-graph session serves shape {tuple(self.input.shape())}, got {q.shape}",
                                "pad the batch to the session's size or open one session per batch size")
        self.input.update_inplace(np.ascontiguousarray(q, np.float32))
        self.session.run_with_iobinding(self.binding)

    def run(self, q: np.ndarray) -> dict[str, np.ndarray]:
        self.replay(q)
        return {name: v.numpy() for name, v in self.outputs.items()}


def _source(model) -> str | bytes:
    return model if isinstance(model, bytes) else str(Path(model))


def make_graph_session(model, batch: int, *, graph: bool = True, profile: bool = False) -> GraphSession:
    """A CUDA session for ``batch`` queries; no CPU fallback, since a CPU node makes capture impossible."""
    ok, reason = cuda_status()
    if not ok:
        raise ProviderError(f"CUDA requested but unusable: {reason}", ProviderError.default_fix)
    so = session_options()
    so.enable_profiling = profile
    if profile:  # into the temp folder, never the caller's working directory
        import tempfile

        so.profile_file_prefix = str(Path(tempfile.gettempdir()) / "h2l_cuda_graph_profile")
    opts = {"use_tf32": "0", **({"enable_cuda_graph": "1"} if graph else {})}
    try:
        sess = ort.InferenceSession(_source(model), so, providers=[(CUDA, opts)])
    except Exception as exc:  # noqa: BLE001 - onnxruntime refuses capture-incompatible graphs here
        raise ProviderError(f"CUDA session with {opts} failed ({str(exc).splitlines()[0][:200]})",
                            "run without CUDA graphs (plain I/O binding)") from None
    if sess.get_providers()[0] != CUDA:
        raise ProviderError(f"CUDA session fell back to {sess.get_providers()[0]}", ProviderError.default_fix)
    inp = sess.get_inputs()[0]
    shape = [batch if not isinstance(s, int) else s for s in inp.shape]
    x = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
    binding = sess.io_binding()
    binding.bind_ortvalue_input(inp.name, x)
    outs = {}
    for o in sess.get_outputs():
        oshape = [batch if not isinstance(s, int) else s for s in o.shape]
        outs[o.name] = ort.OrtValue.ortvalue_from_shape_and_type(oshape, _NP.get(o.type, np.float32), "cuda", 0)
        binding.bind_ortvalue_output(o.name, outs[o.name])
    return GraphSession(sess, binding, x, outs, batch, graph, sess.get_provider_options().get(CUDA, {}))


def _node_events_per_run(profile_file: str, runs: int | None = None) -> list[int]:
    """Kernel events of each model run, in order, from onnxruntime's profile JSON (the last ``runs``, or all)."""
    events = json.loads(Path(profile_file).read_text())
    runs_at = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = sorted(e["ts"] for e in events
                   if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"))
    counts = [0] * len(runs_at)
    for ts in nodes:
        i = int(np.searchsorted(runs_at, ts, side="right")) - 1
        if 0 <= i < len(counts):
            counts[i] += 1
    return counts[-runs:] if runs else counts


def replay_verdict(counts: list[int], outputs_match: bool) -> bool:
    """Replay happened: outputs match the plain session, the first runs executed node kernels (the capture)
    and the last five executed none.  A profiler that recorded nothing proves nothing, so that is False too."""
    return bool(outputs_match and len(counts) >= 6 and max(counts[:3]) > 0 and sum(counts[-5:]) == 0)


def replay_evidence(model, batch: int = 1, runs: int = 30, seed: int = 0) -> dict:
    """Whether graph replay really happened, measured two ways, plus graph vs plain I/O-binding latency.

    ``replayed`` is True only when the session accepted ``enable_cuda_graph``, the outputs match the plain
    session, and the last runs executed no per-node kernels while the first ones did (the capture).
    """
    rng = np.random.default_rng(seed)
    out: dict = {"batch": batch, "runs": runs}
    try:
        plain = make_graph_session(model, batch, graph=False)
        graphed = make_graph_session(model, batch, graph=True, profile=True)
    except ProviderError as exc:
        return {**out, "replayed": False, "reason": exc.one_line()}
    out["provider_options"] = {k: graphed.options.get(k) for k in ("enable_cuda_graph", "use_tf32")}
    q = rng.standard_normal((batch, plain.input.shape()[1])).astype(np.float32)
    ref = plain.run(q)
    for _ in range(runs):
        got = graphed.run(q)
    q2 = rng.standard_normal(q.shape).astype(np.float32)  # in-place update must reach the captured graph
    got2, ref2 = graphed.run(q2), plain.run(q2)  # one run each: every run adds a profile event
    same = all(np.allclose(got[k], ref[k], atol=1e-4) and np.allclose(got2[k], ref2[k], atol=1e-4) for k in ref)
    profile_file = graphed.session.end_profiling()
    # Every model_run of the graphed session, in order: onnxruntime's first Run() recurses through a regular
    # run and the capture run before it returns (a count that is its business), then each replay is one
    # event without node kernels.  So the verdict reads them all, never a slice sized by our own call count.
    counts = _node_events_per_run(profile_file)
    Path(profile_file).unlink(missing_ok=True)
    out["node_events_first_runs"], out["node_events_last_runs"] = counts[:3], counts[-5:]
    out["outputs_match_plain"] = bool(same)
    out["replayed"] = replay_verdict(counts, same)
    for name, s in (("plain_iobinding", plain), ("cuda_graph", make_graph_session(model, batch, graph=True))):
        for _ in range(20):
            s.replay(q)
        ts = []
        for _ in range(200):
            t0 = time.perf_counter_ns()
            s.replay(q)
            ts.append((time.perf_counter_ns() - t0) / 1e3)
        out[f"{name}_p50_us"] = round(float(np.median(ts)), 2)
    out["reason"] = "node kernels stopped after capture" if out["replayed"] else \
        "per-node kernels still ran on the last runs (or outputs differed): no replay"
    return out


def graph_variant(model):
    """A bench callable: one CUDA-graph session per batch size, opened on first use."""
    sessions: dict[int, GraphSession] = {}

    def run(q: np.ndarray) -> None:
        s = sessions.get(len(q)) or sessions.setdefault(len(q), make_graph_session(model, len(q)))
        s.replay(q)
    return run
