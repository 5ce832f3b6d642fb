"""``h2l export --routed``: build ``teacher_routed.onnx``, pick K, and say what routing can and cannot do.

The graph is built and checked here; its parity with the numpy reference and
its bound against the flat teacher are checked by :func:`h2l.verify.checks.verify_bundle`
on the staged bundle, like every other model.
"""

from __future__ import annotations

from .errors import InputError
from .exporters.onnx_common import check, check_size, serialize
from .exporters.onnx_routed import ROUTED_FILE, make_routed_model, routed_size
from .model.routing import make_screen
from .model.routing_profile import DEFAULT_EPSILON, MAX_AUTO_K, choose_k, profile_queries, teacher_profile
from .model.teacher import Teacher

ROUTERS = ("screen", "ivf")


def routed_model(teacher: Teacher, *, router: str = "screen", candidates: int | None = None,
                 seed: int = 0) -> tuple[bytes, dict, dict]:
    """(file bytes, models.routed manifest entry, reports/routing.json) for ``teacher``."""
    from .export import contract

    if router not in ROUTERS:
        raise InputError(f"unknown router {router!r}", "use --router screen or --router ivf")
    if candidates is not None and candidates < 1:
        raise InputError(f"--candidates {candidates} must be ≥ 1", "pass e.g. --candidates 256, or omit it")
    if router == "ivf":
        raise InputError("--router ivf is not available in this build yet", "use --router screen (the default)")
    check_size(routed_size(teacher.n_heads, teacher.dim) + 4096, ROUTED_FILE)
    index = make_screen(teacher.keys, teacher.answers)
    profile = teacher_profile(teacher.keys, teacher.answers, teacher.temperature, seed=seed, index=index)
    if candidates is None:
        k = choose_k(index, profile_queries(teacher.keys, teacher.temperature, 256, seed + 7))
        how = (f"auto: certifies mass ≤ {DEFAULT_EPSILON:g} on 95% of near-centroid and sampled queries, "
               f"at most {MAX_AUTO_K}")
    else:
        k, how = min(candidates, teacher.n_heads), "--candidates"
    meta = {"h2l.name": teacher.name, "h2l.temperature": repr(teacher.temperature),
            "h2l.teacher_sha256": teacher.fingerprint()}
    proto = make_routed_model(index, k, meta)
    check(proto)
    data = serialize(proto, ROUTED_FILE)
    entry = {"file": ROUTED_FILE, "role": "routed_teacher", "router": "screen", "candidates": k, "bound": "proven",
             "opset": proto.opset_import[0].version, "ir_version": proto.ir_version, **contract(proto)}
    saves = k < teacher.n_heads
    note = (f"routed teacher: K = {k} of N = {teacher.n_heads} heads scored exactly ({how}); "
            + ("the bound on neglected mass is proven per query" if saves else
               "K = N: every head is a candidate, so it is exact but no faster than the flat teacher"))
    report = {"router": "screen", "candidates": k, "candidates_rule": how, "bound": "proven",
              "screen": {"query_bits": 7, "weight_bits": 8, "rho": index.rho, "key_norm": index.key_norm,
                         "slack": index.slack},
              "profile": profile, "note": note, "verdict": profile["verdict"]}
    return data, entry, report
