"""What ``h2l bench`` times: a bundle's shipped graphs, and the synthetic sweep over N.

``h2l bench DIR`` times the bundle's own verified model bytes (teacher, student and routed teacher, on
onnxruntime CPU and, where CUDA really runs, the CUDA EP with I/O binding and CUDA graphs), the numpy
teacher, and torch eager when given the student checkpoint.  ``--sweep`` builds its graphs: teacher numpy
and onnxruntime; student torch eager and onnxruntime folded, unfolded and int8.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..exporters import INPUT_NAME
from ..exporters.onnx_common import serialize
from ..exporters.onnx_student import make_folded_student_model, make_unfolded_student_model
from ..exporters.onnx_teacher import make_teacher_model
from ..exporters.quantize import make_int8_student_model
from ..metrics import fidelity
from ..model.sampling import sampled_queries
from ..model.sizing import choose_arch, macs
from ..model.student import ProjectionTransformer, StudentConfig, fold
from ..model.synthetic import synthetic_teacher
from ..model.teacher import Teacher, project_arrays, require_flat
from ..runtime.sessions import cuda_status, make_runner
from .timing import (
    BENCH_SCHEMA,
    Timing,
    crossover,
    floor_us,
    machine_info,
    measure_floor,
    pin_threads,
    time_blocks,
    timing_of,
    to_json,
)

Fn = Callable[[np.ndarray], object]


def _ort(model_bytes: bytes, threads: int, opt_level: str = "all") -> Fn:
    runner = make_runner(model_bytes, "cpu", threads=threads, opt_level=opt_level)
    sess, name = runner.session, INPUT_NAME
    return lambda q: sess.run(None, {name: q})


def _ort_cuda_iobinding(model_bytes: bytes) -> Fn:
    import onnxruntime as ort

    runner = make_runner(model_bytes, "cuda")
    sess = runner.session
    outs = [o.name for o in sess.get_outputs()]

    def run(q: np.ndarray):
        binding = sess.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(q, "cuda", 0))
        for o in outs:
            binding.bind_output(o, "cuda")
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding
    return run


def _torch(model: ProjectionTransformer, device: str) -> Fn:
    import torch

    m = model.to(device).eval()

    def run(q: np.ndarray):
        with torch.inference_mode():
            out = m(torch.from_numpy(q).to(device))
            if device == "cuda":
                torch.cuda.synchronize()
            return out
    return run


def variants(teacher: Teacher, model: ProjectionTransformer | None, *, threads: int, providers: set[str],
             int8: bool = True, unfolded: bool = True) -> dict[tuple[str, str, str], Fn]:
    """(model, variant, provider) → callable on a (batch, d) float32 array."""
    require_flat(teacher, "h2l bench", "bench a flat teacher; affine-head teachers are not benchmarked yet")
    keys, answers = teacher.keys, teacher.answers
    out: dict[tuple[str, str, str], Fn] = {("teacher", "numpy", "cpu"): lambda q: project_arrays(q, keys, answers)}
    t_bytes = serialize(make_teacher_model(teacher), "teacher.onnx")
    cuda_ok = "cuda" in providers and cuda_status()[0]
    if "cpu" in providers:
        out[("teacher", "ort", "cpu")] = _ort(t_bytes, threads)
    if cuda_ok:
        from ..runtime.cuda_graph import graph_variant

        out[("teacher", "ort_iobinding", "cuda")] = _ort_cuda_iobinding(t_bytes)
        out[("teacher", "ort_cuda_graph", "cuda")] = graph_variant(t_bytes)
    if model is None:
        return out
    folded = make_folded_student_model(fold(model), {})
    if "torch" in providers:
        out[("student", "torch_eager", "cpu")] = _torch(model, "cpu")
    if "cpu" in providers:
        out[("student", "ort_folded", "cpu")] = _ort(serialize(folded, "s"), threads)
        if unfolded:
            out[("student", "ort_unfolded", "cpu")] = _ort(serialize(make_unfolded_student_model(model, {}), "u"),
                                                            threads)
        if int8:
            out[("student", "ort_int8", "cpu")] = _ort(serialize(make_int8_student_model(folded), "q"), threads)
    if cuda_ok:
        from ..runtime.cuda_graph import graph_variant

        out[("student", "ort_folded_iobinding", "cuda")] = _ort_cuda_iobinding(serialize(folded, "s"))
        out[("student", "ort_folded_cuda_graph", "cuda")] = graph_variant(serialize(folded, "s"))
    if "cuda" in providers and torch_cuda():
        import copy

        out[("student", "torch_eager", "cuda")] = _torch(copy.deepcopy(model), "cuda")
    return out


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_variants(fns: dict, dim: int, batches: list[int], quick: bool, seed: int = 0) -> list[Timing]:
    """Every variant at every batch size, timed together (round-robin blocks) so their ratios are fair."""
    rng = np.random.default_rng(seed)
    res = []
    for batch in batches:
        q = np.ascontiguousarray(rng.standard_normal((batch, dim)), np.float32)
        calls = {key: (lambda fn=fn, q=q: fn(q)) for key, fn in fns.items()}
        times = time_blocks(calls, min_time=0.05 if quick else 0.5, warmup=5 if quick else 30)
        res += [timing_of(model, variant, provider, batch, times[(model, variant, provider)])
                for model, variant, provider in fns]
    return res


def shipped_variant(name: str, meta: dict) -> str:
    """A bundle model's variant name, from what its manifest says it is (the names --sweep uses)."""
    if name == "routed":
        return f"ort_{meta.get('router', 'screen')}"
    if name == "student":
        return "ort_int8" if meta.get("quantization") == "int8" else \
            ("ort_folded" if meta.get("folded", True) else "ort_unfolded")
    return "ort"


def _shipped_fidelity(student: bytes, teacher: Teacher, threads: int) -> dict:
    """The shipped student graph vs the teacher on seeded near-centroid queries."""
    q = sampled_queries(teacher.keys, teacher.temperature, 512, 0)
    ref, _ = teacher.project(q)
    got = make_runner(student, "cpu", threads=threads).run(q)["projected_embedding"]
    return {**fidelity(got, ref, teacher.answers), "bytes": len(student)}


def _checked_model(checkpoint: Path, t: dict, student_meta: dict | None) -> ProjectionTransformer:
    from ..distill.checkpoint import load_checkpoint
    from ..errors import InputError

    ck = load_checkpoint(checkpoint)
    if ck.teacher_sha256 != t["sha256"]:
        raise InputError(f"--student {checkpoint} was distilled from another teacher (teacher sha256 "
                         f"{ck.teacher_sha256[:12]}…, the bundle's is {t['sha256'][:12]}…)",
                         "pass the checkpoint the bundle was exported from")
    if student_meta is not None and ck.config.to_dict() != student_meta.get("architecture"):
        raise InputError("--student does not match the bundle's student architecture",
                         "pass the checkpoint the bundle was exported from")
    try:
        return ck.model()
    except RuntimeError as exc:  # load_state_dict: weights that do not fit the checkpoint's own config
        raise InputError(f"--student {checkpoint}: weights do not match its architecture "
                         f"({str(exc).splitlines()[0][:160]})", "re-run `h2l distill`") from None


def bench_bundle(root: Path, *, checkpoint: Path | None, providers: set[str], batches: list[int], threads: int,
                 quick: bool) -> dict:
    """Time what the bundle ships: every onnxruntime variant runs a model's verified bytes, never a re-export.

    teacher numpy runs on the arrays read from the shipped teacher.onnx.  ``checkpoint`` (the student the
    bundle was exported from) adds torch eager, the reference the export started from.  Graphs the bundle
    does not ship (an unfolded or int8 form of its student) are what ``--sweep`` times; to time one here,
    export it (``--no-fold``, ``--quantize int8``) and bench that bundle."""
    from ..bundle.reader import open_bundle
    from ..exporters.onnx_teacher import teacher_arrays
    from ..model.teacher import make_teacher

    bundle = open_bundle(root, defer_models=True)  # models are hashed on the bytes that are loaded
    shipped = {name: bundle.read_verified(meta["file"]) for name, meta in bundle.models.items()
               if name in ("teacher", "student", "routed")}  # the encoder takes token ids, not queries
    keys, answers = teacher_arrays(shipped["teacher"])
    t = bundle.manifest["teacher"]
    teacher = make_teacher((keys * t["temperature"]).T, answers, t["temperature"], t["cluster_ids"],
                           name=bundle.manifest["name"])
    model = None if checkpoint is None else _checked_model(checkpoint, t, bundle.models.get("student"))
    cuda_ok = "cuda" in providers and cuda_status()[0]
    with pin_threads(threads):
        fns: dict[tuple[str, str, str], Fn] = {("teacher", "numpy", "cpu"): lambda q: project_arrays(q, keys, answers)}
        for name, data in shipped.items():
            variant = shipped_variant(name, bundle.models[name])
            if "cpu" in providers:
                fns[(name, variant, "cpu")] = _ort(data, threads)
            if cuda_ok:
                from ..runtime.cuda_graph import graph_variant

                fns[(name, f"{variant}_iobinding", "cuda")] = _ort_cuda_iobinding(data)
                fns[(name, f"{variant}_cuda_graph", "cuda")] = graph_variant(data)
        if model is not None and "torch" in providers:
            fns[("student", "torch_eager", "cpu")] = _torch(model, "cpu")
        if model is not None and "cuda" in providers and torch_cuda():
            import copy

            fns[("student", "torch_eager", "cuda")] = _torch(copy.deepcopy(model), "cuda")
        timings = run_variants(fns, teacher.dim, batches, quick)
        report = {"schema": BENCH_SCHEMA, "machine": machine_info(threads), "bundle": str(root),
                  "n_heads": teacher.n_heads, "dim": teacher.dim, "results": to_json(timings),
                  "timed_files": {name: bundle.models[name]["file"] for name in shipped},  # verified bytes
                  "cuda": dict(zip(("usable", "reason"), cuda_status(), strict=True))}
        if not quick:
            report["floor"] = measure_floor(threads)
        if cuda_ok:  # whether graph replay really happened, per model
            from ..runtime.cuda_graph import replay_evidence

            report["cuda_graph"] = {name: replay_evidence(data) for name, data in shipped.items()}
        if "student" in shipped and not quick:
            report["fidelity"] = {shipped_variant("student", bundle.models["student"]):
                                  _shipped_fidelity(shipped["student"], teacher, threads)}
    return report


def bench_sweep(ns: list[int], *, dim: int, providers: set[str], batches: list[int], threads: int,
                quick: bool, seed: int = 0, temperature: float = 0.1, routed: bool = True,
                candidates: int | None = None, checkpoint: Path | None = None) -> dict:
    """Synthetic teachers at each N: flat teacher, routed teacher and students sized by ``h2l arch``.

    Students are untrained (timing only) unless ``checkpoint`` was distilled from the synthetic teacher
    of that N (same d, τ and seed); then its fidelity is measured too.  The routed teacher's fidelity
    (near-centroid and far-off queries) is always measured.
    """
    import torch

    from .sweep_fidelity import fidelity_rows, routed_bytes, routed_variant

    ckpt = None
    if checkpoint is not None:
        from ..distill.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
    rows, fid, ks = [], [], {}
    with pin_threads(threads):
        floor = measure_floor(threads)
        for n in ns:
            arch = choose_arch(n, dim)
            teacher = synthetic_teacher(n, dim, temperature=temperature, seed=seed)
            trained = ckpt is not None and ckpt.teacher_sha256 == teacher.fingerprint()
            torch.manual_seed(seed)
            model = (ckpt.model() if ckpt is not None and trained
                     else ProjectionTransformer(StudentConfig(dim, arch.heads, arch.layers)))
            model = model.eval()
            fns = variants(teacher, model, threads=threads, providers=providers, unfolded=not quick)
            graphs = {}
            if routed and "cpu" in providers:
                data, ks[str(n)] = routed_bytes(teacher, candidates, seed)
                fns[("routed", "ort_screen", "cpu")] = routed_variant(data, threads)
                graphs[("routed", "ort_screen")] = data
            if trained:
                folded = make_folded_student_model(fold(model), {})
                graphs[("student", "ort_folded")] = serialize(folded, "s")
                graphs[("student", "ort_int8")] = serialize(make_int8_student_model(folded), "q")
            for t in run_variants(fns, dim, batches, quick):
                rows.append({"n": n, "heads": arch.heads, "layers": arch.layers, **t.__dict__})
            fid += fidelity_rows(teacher, n, graphs, threads, seed)
            del fns, graphs
    report = {"schema": BENCH_SCHEMA, "machine": machine_info(threads), "dim": dim, "ns": ns, "floor": floor,
              "temperature": temperature, "results": rows, "fidelity": fid, "candidates": ks,
              "cuda": dict(zip(("usable", "reason"), cuda_status(), strict=True))}
    report["crossover"] = sweep_crossovers(rows, ns, batches)
    d = dim
    report["floor_per_n"] = {str(n): floor_us(4 * (choose_arch(n, d).layers * (d * d + 2 * d * 512) + d * d),
                                              macs(d, choose_arch(n, d).layers, 512, True), floor) for n in ns}
    return report



def sweep_crossovers(rows: list[dict], ns: list[int], batches: list[int]) -> dict:
    out = {}
    for batch in batches:
        med: dict[tuple[str, str, str], dict[int, float]] = {}
        for r in rows:
            if r["batch"] == batch:
                med.setdefault((r["model"], r["variant"], r["provider"]), {})[r["n"]] = r["p50_us"]
        teacher_best = [min(v[n] for (m, _, p), v in med.items() if m == "teacher" and p == "cpu") for n in ns]
        for (m, variant, p), v in med.items():
            if m in ("student", "routed"):
                out[f"batch{batch}:{variant}:{p}"] = crossover(ns, teacher_best, [v[n] for n in ns])
    return out


def plot_sweep(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import write_bytes_atomic
    from ..writers import png_bytes

    batches = sorted({r["batch"] for r in report["results"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.2), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        series: dict[str, list[tuple[int, float]]] = {}
        for r in report["results"]:
            if r["batch"] == batch:
                series.setdefault(f"{r['model']} {r['variant']} ({r['provider']})", []).append((r["n"], r["p50_us"]))
        for label, pts in sorted(series.items()):
            xs, ys = zip(*sorted(pts), strict=True)
            ax.plot(xs, ys, marker="o", linestyle="--" if label.startswith("teacher") else "-", label=label)
        ax.set(xscale="log", yscale="log", xlabel="teacher heads N", ylabel="median latency per call (µs)",
               title=f"batch {batch}, d = {report['dim']}, {report['machine']['threads']['intra_op']} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    data = png_bytes(fig)
    plt.close(fig)
    write_bytes_atomic(Path(path), data)
