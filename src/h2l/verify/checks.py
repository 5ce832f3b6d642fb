"""Check a bundle: integrity, I/O contract, golden vectors, export-vs-source and student-vs-teacher parity.

Every check is run and recorded as a :class:`Check`; :func:`raise_for_failures`
then raises once with every failure listed.  A parity failure is never a warning.
"""

from __future__ import annotations

import numpy as np

from ..bundle.reader import BundleReader, open_bundle
from ..errors import IntegrityError, ProviderError
from ..exporters import PROJECTED_NAME, WEIGHTS_NAME
from ..exporters.onnx_teacher import teacher_arrays
from ..metrics import fidelity, nearest_answer
from ..model.sampling import sampled_queries
from ..model.teacher import check_queries, project_arrays
from ..runtime.sessions import Runner, contract_diff, contract_of, cuda_status, make_runner
from .encoder_checks import check_answers, check_encoder, check_encoder_vs_st
from .report import Check, VerifyReport

BATCH_SIZES = (1, 3, 32)
ATOL = {"cpu": 1e-5, "cuda": 1e-4}
INT8_BATCH_ATOL = 2e-2


def resolve_providers(provider: str) -> tuple[list[str], list[tuple[str, str]]]:
    """cpu | cuda | auto | all → (providers to run, skipped with reasons); unusable CUDA when required raises."""
    if provider not in ("cpu", "cuda", "auto", "all"):
        raise ProviderError(f"unknown provider {provider!r}", "use cpu, cuda, auto or all")
    if provider == "cpu":
        return ["cpu"], []  # no CUDA probe: export verifies on CPU and must not touch GPU libraries
    ok, reason = cuda_status()
    if provider in ("cuda", "all") and not ok:
        raise ProviderError(f"--provider {provider} needs CUDA, which is unusable here: {reason}")
    run = {"cpu": ["cpu"], "cuda": ["cuda"], "all": ["cpu", "cuda"], "auto": ["cpu"] + (["cuda"] if ok else [])}
    skipped = [("cuda", reason)] if provider == "auto" and not ok else []
    return run[provider], skipped


def _max_abs(a: np.ndarray, b: np.ndarray, rows: int = 16) -> float:
    """max |a − b| in float64, a few rows at a time ([256, N] routing weights would otherwise make three
    float64 temporaries of 200 MB each at N = 100k)."""
    if not a.size:
        return 0.0
    return max(float(np.max(np.abs(a[i:i + rows].astype(np.float64) - b[i:i + rows])))
               for i in range(0, len(a), rows))


def _open(bundle: BundleReader, name: str, data: bytes, provider: str) -> tuple[Runner | None, Check]:
    """A session from the verified bytes (never re-opened), and its I/O-contract check."""
    meta = bundle.models[name]
    try:
        runner = make_runner(data, provider, arena=False)  # activations freed after each run, not kept
    except ProviderError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise IntegrityError(f"{meta['file']} does not load in onnxruntime ({str(exc).splitlines()[0][:160]})",
                             "re-export the bundle") from None
    diff = contract_diff({"inputs": meta["inputs"], "outputs": meta["outputs"]}, contract_of(runner.session))
    return (None if diff else runner), Check(name, provider, "io_contract", not diff, "integrity",
                                             detail="; ".join(diff))


def _golden(bundle: BundleReader, name: str, runner: Runner, golden: np.ndarray, provider: str,
            atol: float) -> list[Check]:
    got = runner.run(golden)
    out = []
    for out_name in bundle.manifest["golden"]["outputs"].get(name, {}):
        err = _max_abs(got[out_name], bundle.golden_output(name, out_name))
        out.append(Check(name, provider, f"golden:{out_name}", err <= atol, "parity", err, atol))
    return out


def _check_provider(bundle: BundleReader, provider: str, sources: dict[str, np.ndarray], min_cosine: float,
                    labels: np.ndarray | None, summary: dict, keys: np.ndarray, answers: np.ndarray,
                    model_bytes) -> list[Check]:
    """The checks of one provider on every model but the routed teacher (see :func:`_verify_routed`)."""
    checks: list[Check] = []
    atol = ATOL[provider]
    runners: dict[str, Runner] = {}
    for name in bundle.models:
        if name == "routed":
            continue
        runner, contract_check = _open(bundle, name, model_bytes(name), provider)
        checks.append(contract_check)
        if runner is None:
            return checks
        runners[name] = runner
    # dynamic int8 quantizes activations per call, so a row's output depends slightly on its batch
    int8 = bundle.models.get("student", {}).get("quantization") == "int8"
    batch_atol = INT8_BATCH_ATOL if int8 else atol
    golden = sources["golden"]
    for name, runner in runners.items():
        if name == "encoder":
            checks += check_encoder(bundle, runner, runners, answers, atol, summary)
            continue
        checks += _golden(bundle, name, runner, golden, provider, atol)
    teacher_ref = {}
    for src, q in sources.items():
        ref_p, ref_w = project_arrays(q, keys, answers)
        teacher_ref[src] = ref_p
        for b in BATCH_SIZES:
            got = runners["teacher"].run_batched(q, b)
            err = max(_max_abs(got[PROJECTED_NAME], ref_p), _max_abs(got[WEIGHTS_NAME], ref_w))
            checks.append(Check("teacher", provider, f"vs_numpy:{src}:batch{b}", err <= atol, "parity", err, atol))
    if "student" in runners:
        for src, q in sources.items():
            outs = [runners["student"].run_batched(q, b)[PROJECTED_NAME] for b in BATCH_SIZES]
            err = max(_max_abs(o, outs[0]) for o in outs[1:])
            checks.append(Check("student", provider, f"batch_consistency:{src}", err <= batch_atol, "parity", err,
                                batch_atol))
            if src == "random":
                continue  # isotropic noise far from every centroid: for export checks, not for the gate
            rows = _gated_rows(bundle, src, len(q))
            fid = fidelity(outs[0][rows], teacher_ref[src][rows], answers)
            summary.setdefault(provider, {})[src] = fid
            checks.append(Check("student", provider, f"vs_teacher:{src}", fid["mean_cosine"] >= min_cosine,
                                "parity", fid["mean_cosine"], min_cosine,
                                f"mean {fid['mean_cosine']:.5f} min {fid['min_cosine']:.5f} p5 "
                                f"{fid['p5_cosine']:.5f} top1 {fid['top1_agreement']:.1%} (n={fid['n']})"))
    if labels is not None and "user" in sources:
        q = sources["user"]
        recall = {"teacher": float((nearest_answer(teacher_ref["user"], answers) == labels).mean())}
        if "student" in runners:
            recall["student"] = float((nearest_answer(runners["student"].run(q)[PROJECTED_NAME], answers)
                                       == labels).mean())
        for name, r in recall.items():
            summary.setdefault(provider, {}).setdefault("recall_at_1", {})[name] = r
            checks.append(Check(name, provider, "recall@1:user", True, "info", r, None,
                                "nearest answer equals the query's cluster"))
    return checks


def _gated_rows(bundle: BundleReader, src: str, n: int) -> np.ndarray:
    """Rows that count for the student gate: golden random and zero rows are for export checks only."""
    kinds = bundle.manifest["golden"].get("rows")
    if src != "golden" or not kinds or len(kinds) != n:
        return np.arange(n)
    return np.array([i for i, k in enumerate(kinds) if k in ("stored", "sampled")], dtype=np.int64)


def verify_bundle(root, *, provider: str = "auto", min_cosine: float = 0.98, queries: np.ndarray | None = None,
                  labels: np.ndarray | None = None, n_sampled: int = 256, seed: int = 0,
                  public_key=None) -> VerifyReport:
    """Run every check on every requested provider; never raises for a failed check (see raise_for_failures).

    ``public_key`` (KEY.pub path or bytes): refuse, before anything else, a bundle it did not sign."""
    providers, skipped = resolve_providers(provider)
    bundle = open_bundle(root, defer_models=True, public_key=public_key)
    summary: dict = {}
    checks: list[Check] = check_answers(bundle)
    flat_checks, routed = _verify_flat(bundle, providers, min_cosine, queries, labels, n_sampled, seed, summary)
    checks += flat_checks
    if routed is not None:  # after _verify_flat returned: the flat teacher's bytes and sessions are gone
        checks += _verify_routed(bundle, providers, routed, summary)
    if "encoder" in bundle.models:
        st_check, reason = check_encoder_vs_st(bundle)
        checks += st_check
        if reason:
            skipped = [*skipped, ("encoder vs sentence-transformers", reason)]
    return VerifyReport(tuple(checks), tuple(providers), tuple(skipped), min_cosine, summary)


def _verify_flat(bundle: BundleReader, providers: list[str], min_cosine: float, queries, labels, n_sampled: int,
                 seed: int, summary: dict):
    """Every model but the routed teacher, on every provider; and what the routed checks need from the flat
    teacher (its references and the same-teacher comparison), so that they run after its arrays are freed."""
    teacher_bytes = bundle.read_verified(bundle.models["teacher"]["file"])

    def model_bytes(name: str) -> bytes:  # each read is hashed and screened; only the teacher's is kept
        return teacher_bytes if name == "teacher" else bundle.read_verified(bundle.models[name]["file"])

    d = bundle.manifest["teacher"]["dim"]
    keys, answers = teacher_arrays(teacher_bytes, bundle.models["teacher"]["file"])  # views of those bytes
    rng = np.random.default_rng(seed)
    sources = {"golden": check_queries(bundle.golden_inputs(), d, what="golden inputs"),
               "sampled": sampled_queries(keys, bundle.manifest["teacher"]["temperature"], n_sampled, seed),
               "random": rng.standard_normal((64, d)).astype(np.float32)}
    if queries is not None:
        sources["user"] = check_queries(queries, d, what="--queries")
    checks: list[Check] = []
    for p in providers:
        checks += _check_provider(bundle, p, sources, min_cosine, labels, summary, keys, answers, model_bytes)
    routed = None
    if "routed" in bundle.models:
        from .routed_checks import prepare_routed

        routed = prepare_routed(bundle, model_bytes("routed"), keys, answers, sources)
    return checks, routed


def _verify_routed(bundle: BundleReader, providers: list[str], routed, summary: dict) -> list[Check]:
    """The routed teacher on every provider, holding only its own bytes and session."""
    from .routed_checks import check_routed, reference_index

    checks: list[Check] = []
    ref = None if routed.differs else reference_index(bundle, routed.data)
    for p in providers:
        checks.append(Check("routed", p, "same_teacher", not routed.differs, "integrity",
                            detail=routed.differs))
        if routed.differs:
            continue
        runner, contract_check = _open(bundle, "routed", routed.data, p)
        checks.append(contract_check)
        if runner is None:
            continue
        checks += _golden(bundle, "routed", runner, routed.sources["golden"], p, ATOL[p])
        checks += check_routed(bundle, p, runner, ref, routed, ATOL[p], summary,
                               Check, BATCH_SIZES)
        runner = None
    return checks
