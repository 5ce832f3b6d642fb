"""The (H, L) sizing rule and cost model of a student; pure integers, no torch (``h2l arch`` stays light)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class ArchCandidate:
    heads: int
    layers: int
    capacity: int  # H ** L
    params: int
    macs_unfolded: int
    macs_folded: int


def param_count(d: int, layers: int, ff_dim: int) -> int:
    """Parameters of the seed design (independent of H: the heads split d)."""
    per_layer = (3 * d * d + 3 * d) + (d * d + d) + (d * ff_dim + ff_dim) + (ff_dim * d + d) + 4 * d
    return 2 * (d * d + d) + layers * per_layer


def macs(d: int, layers: int, ff_dim: int, folded: bool) -> int:
    """Multiply-adds per query: unfolded runs Q, K, V and O; folded runs one d×d per layer."""
    attn = d * d if folded else 4 * d * d
    io = d * d if folded else 2 * d * d  # folded: the input projection lives in layer 1
    return io + layers * (attn + 2 * d * ff_dim)


def arch_candidates(n: int, dim: int = 384, ff_dim: int = 512, max_heads: int = 8,
                    prefer_heads: int = 4, max_layers: int = 8) -> list[ArchCandidate]:
    """All (H, L) with H | d, 2 ≤ H ≤ max_heads, H**L ≥ n, in preference order.

    Order: fewest layers, then least overshoot H**L − n, then H closest to
    ``prefer_heads``.  Integer powers only: the seed's ``ceil(log n / log H)``
    says 4 layers for n = 216, H = 6 because log(216)/log(6) is 3.0000000000000004.
    The cap on H matters: without it one layer with H ≥ n always wins.
    """
    if n < 1:
        raise InputError(f"N = {n} heads", "pass N ≥ 1")
    if dim < 2:
        raise InputError(f"d = {dim}", "pass --embed-dim ≥ 2")
    out = []
    for h in range(2, max_heads + 1):
        if dim % h:
            continue
        layers, cap = 1, h
        while cap < n:
            layers, cap = layers + 1, cap * h
        if layers <= max_layers:
            out.append(ArchCandidate(h, layers, cap, param_count(dim, layers, ff_dim),
                                     macs(dim, layers, ff_dim, False), macs(dim, layers, ff_dim, True)))
    if not out:
        raise InputError(f"no (H, L) with H | {dim}, H ≤ {max_heads}, L ≤ {max_layers} reaches N = {n}",
                         "raise --max-heads")
    return sorted(out, key=lambda c: (c.layers, c.capacity - n, abs(c.heads - prefer_heads), c.heads))


def choose_arch(n: int, dim: int = 384, **kw) -> ArchCandidate:
    return arch_candidates(n, dim, **kw)[0]
