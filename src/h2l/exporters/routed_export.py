"""``h2l export --routed``: build ``teacher_routed.onnx``, pick K, and say what routing can and cannot do.

The graph is built and checked here; its parity with the numpy reference and
its bound against the flat teacher are checked by :func:`h2l.verify.checks.verify_bundle`
on the staged bundle, like every other model.
"""

from __future__ import annotations

from ..errors import InputError
from ..model.routing import make_screen
from ..model.routing_profile import DEFAULT_EPSILON, MAX_AUTO_K, choose_k, profile_queries, teacher_profile
from ..model.teacher import Teacher, require_flat
from ..onnx_wire import join_model
from .onnx_common import check, check_serialized, check_size, contract, serialize
from .onnx_routed import ROUTED_FILE, large_tables, make_routed_model, routed_size

ROUTERS = ("screen", "ivf")


def routed_model(teacher: Teacher, *, router: str = "screen", candidates: int | None = None,
                 seed: int = 0) -> tuple[bytes, dict, dict]:
    """(file bytes, models.routed manifest entry, reports/routing.json) for ``teacher``."""
    require_flat(teacher, "h2l export --routed", "route a flat teacher (the screen's bound assumes answer heads)")
    if router not in ROUTERS:
        raise InputError(f"unknown router {router!r}", "use --router screen or --router ivf")
    if candidates is not None and candidates < 1:
        raise InputError(f"--candidates {candidates} must be ≥ 1", "pass e.g. --candidates 256, or omit it")
    if router == "ivf":
        return _ivf_model(teacher, candidates, seed)
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
    proto = make_routed_model(index, k, meta, placeholders=True)  # a few kB: the N-sized tables join below
    data = join_model(serialize(proto, ROUTED_FILE), large_tables(index))
    check_serialized(data)
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


def _ivf_model(teacher: Teacher, candidates: int | None, seed: int) -> tuple[bytes, dict, dict]:
    """k-means groups (≈ √N), 4 probed groups (or enough for --candidates); an estimate, never a bound."""
    import numpy as np

    from ..model.routing_ivf import make_ivf
    from .onnx_routed_ivf import make_ivf_model


    check_size(routed_size(teacher.n_heads, teacher.dim) + 4096, ROUTED_FILE)
    index = make_ivf(teacher.keys, teacher.answers, seed=seed)
    if candidates is not None:
        width = int(index.members.shape[1])
        index = make_ivf(teacher.keys, teacher.answers, seed=seed, probes=int(np.ceil(candidates / width)))
    meta = {"h2l.name": teacher.name, "h2l.temperature": repr(teacher.temperature),
            "h2l.teacher_sha256": teacher.fingerprint()}
    proto = make_ivf_model(index, meta)
    check(proto)
    data = serialize(proto, ROUTED_FILE)
    k = index.candidates
    entry = {"file": ROUTED_FILE, "role": "routed_teacher", "router": "ivf", "candidates": k, "bound": "estimate",
             "opset": proto.opset_import[0].version, "ir_version": proto.ir_version, **contract(proto)}
    profile = teacher_profile(teacher.keys, teacher.answers, teacher.temperature, seed=seed)
    groups = int(index.members.shape[0])
    note = (f"routed teacher (ivf): {groups} k-means groups, {index.probes} probed, K = {k} slots (padded to the "
            "largest group; padded slots repeat a head with weight 0). neglected_mass_estimate is an ESTIMATE, "
            "not a bound: nothing certifies this router's output")
    report = {"router": "ivf", "candidates": k, "bound": "estimate", "groups": groups, "probes": index.probes,
              "empty_groups": int((index.group_sizes == 0).sum()), "profile": profile, "note": note,
              "verdict": profile["verdict"]}
    return data, entry, report
