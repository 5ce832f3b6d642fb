"""``h2l bench``: latency of teacher and student variants, the crossover N, and the machine's floor.

All timings of one report come from one process and one run, with pinned
thread counts; medians and ratios are what the docs quote.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

BENCH_SCHEMA = "h2l-bench/1"


@dataclass(frozen=True)
class Timing:
    model: str  # teacher | student
    variant: str  # numpy, ort, ort_folded, ort_unfolded, ort_int8, torch_eager, ...
    provider: str  # cpu | cuda: what actually ran
    batch: int
    calls: int  # calls timed
    p50_us: float
    p90_us: float
    p99_us: float
    per_query_p50_us: float
    throughput_qps: float


def time_calls(fn: Callable[[], object], *, batch: int, min_time: float = 0.3, max_calls: int = 5000,
               warmup: int = 20) -> tuple[int, float, float, float]:
    """(calls, p50, p90, p99) in µs after ``warmup`` calls; runs until ``min_time`` or ``max_calls``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    end = time.perf_counter() + min_time
    while len(times) < max_calls and (len(times) < 10 or time.perf_counter() < end):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e3)
    a = np.array(times)
    return len(a), float(np.percentile(a, 50)), float(np.percentile(a, 90)), float(np.percentile(a, 99))


def time_blocks(fns: dict, *, min_time: float = 0.3, block_time: float = 0.025, warmup: int = 20,
                max_calls: int = 5000) -> dict:
    """Per-call times in µs (arrays, by key) of several callables, timed in round-robin blocks.

    Timing one variant after another lets a neighbour's burst on a shared machine land on one of them, and
    the ratio of their medians then measures the burst (the routed/flat ratio at N = 16,384 ranged 2.6–8.9×
    over five sweeps timed that way).  Here every variant runs for ``block_time`` in turn, round after round,
    for ``min_time`` per variant in all, so drifts fall on all of them alike.  The first call of each block
    refills the caches the other variants evicted and is not timed: a service runs one model, warm.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {k: [] for k in fns}
    end = time.perf_counter() + min_time * len(fns)
    least = min(10, max_calls)
    while any(len(t) < least for t in times.values()) or (
            time.perf_counter() < end and any(len(t) < max_calls for t in times.values())):
        for k, fn in fns.items():
            if len(times[k]) >= max_calls:
                continue
            fn()
            stop = time.perf_counter() + block_time
            while True:
                t0 = time.perf_counter_ns()
                fn()
                times[k].append((time.perf_counter_ns() - t0) / 1e3)
                if time.perf_counter() >= stop or len(times[k]) >= max_calls:
                    break
    return {k: np.array(v) for k, v in times.items()}


def timing_of(model: str, variant: str, provider: str, batch: int, times: np.ndarray) -> Timing:
    p50, p90, p99 = (float(np.percentile(times, p)) for p in (50, 90, 99))
    return Timing(model, variant, provider, batch, len(times), round(p50, 3), round(p90, 3), round(p99, 3),
                  round(p50 / batch, 3), round(batch / p50 * 1e6, 1))


def pin_threads(threads: int):
    """Pin numpy/BLAS and torch to ``threads``; returns a context keeping BLAS pinned."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process
    return threadpool_limits(threads)


def machine_info(threads: int) -> dict:
    import onnxruntime
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__.split("+")[0],
            "threads": {"intra_op": threads, "inter_op": 1, "torch": threads, "blas": threads}}


def measure_floor(threads: int = 1) -> dict:
    """Memory bandwidth (copy of 256 MiB, read+write) and float32 GEMM rate, with the pinned threads."""
    src = np.ones(64 * 2**20, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(5))
    bandwidth = 2 * src.nbytes / best
    small = np.ones(1 << 20, np.float32)  # 4 MiB: about one folded student's weights, cache-resident when hot
    small_dst = np.empty_like(small)
    np.copyto(small_dst, small)
    cached = min(_timed(lambda: np.copyto(small_dst, small)) for _ in range(50))
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    a @ a
    gemm = min(_timed(lambda: a @ a) for _ in range(5))
    return {"memory_bandwidth_gbs": round(bandwidth / 1e9, 2),
            "cache_bandwidth_gbs": round(2 * small.nbytes / cached / 1e9, 2),
            "gemm_gflops": round(2 * 1024**3 / gemm / 1e9, 1), "threads": threads,
            "note": "copies of 256 MiB (DRAM) and 4 MiB (cache) count bytes read and written; GEMM is 1024³ float32"}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def floor_us(weight_bytes: int, macs: int, floor: dict) -> dict:
    """Lower bounds for one query: read the weights once (from DRAM, or from cache when hot); do the MACs."""
    return {"weights_mb": round(weight_bytes / 1e6, 2), "macs": macs,
            "read_weights_us": round(weight_bytes / (floor["memory_bandwidth_gbs"] * 1e9) * 1e6, 1),
            "read_weights_cached_us": round(weight_bytes / (floor["cache_bandwidth_gbs"] * 1e9) * 1e6, 1),
            "compute_us": round(2 * macs / (floor["gemm_gflops"] * 1e9) * 1e6, 1)}


def to_json(timings: list[Timing]) -> list[dict]:
    return [asdict(t) for t in timings]


def crossover(ns: list[int], teacher_us: list[float], student_us: list[float]) -> dict:
    """The N where the student's median first beats the teacher's (log-interpolated between sweep points)."""
    diff = [np.log(s) - np.log(t) for s, t in zip(student_us, teacher_us, strict=True)]
    for i, d in enumerate(diff):
        if d < 0:
            if i == 0:
                return {"n": ns[0], "exact": False, "note": f"student faster already at the smallest N = {ns[0]}"}
            x0, x1, d0 = np.log(ns[i - 1]), np.log(ns[i]), diff[i - 1]
            n = float(np.exp(x0 + (x1 - x0) * d0 / (d0 - d)))
            return {"n": int(round(n)), "exact": False, "between": [ns[i - 1], ns[i]]}
    return {"n": None, "exact": True, "note": f"teacher faster at every N up to {ns[-1]}"}
