"""``--router ivf``: a two-level router (k-means groups, exact scores inside the best groups).  An estimate only.

Heads are grouped by scikit-learn's k-means on the unit centroids (≈ √N groups).
A query scores the group centroids, keeps the best ``probes`` groups and scores
their members exactly.  Groups differ in size, so the member table is padded to
the largest group: a padded slot repeats a real head of its group (or head 0 in
an empty group) and carries a logit mask of −1e30, so its weight is exactly 0.
An empty group's centroid score is masked the same way and is never probed
while a non-empty group is left.

Nothing here bounds the skipped mass: a group's radius gives a vacuous bound in
d = 384 (issue 12), so ``neglected_mass_estimate`` is a heuristic (each skipped
group counted as ``size`` heads at its centroid score times its members' mean
cosine) and is documented and named as an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .routing import EXP_FLOOR, Routed, normalize, rescore

MASK = -1e30


@dataclass(frozen=True, eq=False)
class IvfIndex:
    group_keys: np.ndarray  # (d, G) float32: unit group centroids · (mean member cosine) / τ; 0 for empty groups
    group_mask: np.ndarray  # (G,) float32: 0, or MASK for an empty group
    group_sizes: np.ndarray  # (G,) float32 member counts
    members: np.ndarray  # (G, P) int64, padded
    member_mask: np.ndarray  # (G, P) float32: 0 for a member, MASK for a padded slot
    rows: np.ndarray  # (N, d) float32 flat keys as rows
    answers: np.ndarray  # (N, d) float32
    probes: int

    @property
    def candidates(self) -> int:
        return self.probes * int(self.members.shape[1])


def make_ivf_from_labels(keys: np.ndarray, answers: np.ndarray, labels: np.ndarray, groups: int,
                         probes: int) -> IvfIndex:
    """Build the padded tables from a head → group assignment (k-means' or a test's; groups may be empty)."""
    rows = np.ascontiguousarray(np.asarray(keys, np.float32).T)
    unit = rows.astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-30)
    key_norm = float(np.linalg.norm(rows.astype(np.float64), axis=1).mean())
    labels = np.asarray(labels, np.int64)
    sizes = np.bincount(labels, minlength=groups)
    width = max(1, int(sizes.max()))
    members = np.zeros((groups, width), np.int64)
    member_mask = np.full((groups, width), MASK, np.float32)
    gk = np.zeros((groups, rows.shape[1]), np.float64)
    for g in range(groups):
        idx = np.flatnonzero(labels == g)
        if idx.size == 0:
            continue
        members[g, :] = idx[0]
        members[g, :idx.size] = idx
        member_mask[g, :idx.size] = 0.0
        c = unit[idx].mean(axis=0)
        c /= max(np.linalg.norm(c), 1e-30)
        gk[g] = c * float((unit[idx] @ c).mean()) * key_norm
    group_mask = np.where(sizes > 0, 0.0, MASK).astype(np.float32)
    probes = max(1, min(int(probes), int((sizes > 0).sum())))
    return IvfIndex(np.ascontiguousarray(gk.T.astype(np.float32)), group_mask, sizes.astype(np.float32), members,
                    member_mask, rows, np.ascontiguousarray(answers, np.float32), probes)


def make_ivf(keys: np.ndarray, answers: np.ndarray, *, groups: int | None = None, probes: int = 4,
             seed: int = 0) -> IvfIndex:
    """k-means (scikit-learn, seeded, one init) on the unit centroids, then :func:`make_ivf_from_labels`."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        from ..errors import DependencyError

        raise DependencyError("--router ivf needs scikit-learn's k-means, which is not installed",
                              "pip install scikit-learn (an h2l dependency), or use --router screen") from None

    n = keys.shape[1]
    groups = max(1, min(n, groups or int(round(np.sqrt(n)))))
    unit = np.asarray(keys, np.float64).T
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    labels = KMeans(n_clusters=groups, n_init=1, random_state=seed).fit(unit).labels_
    return make_ivf_from_labels(keys, answers, labels, groups, probes)


def route_ivf(index: IvfIndex, q: np.ndarray) -> Routed:
    """The numpy reference of the ivf graph; ``bound`` holds the *estimate*."""
    qn = normalize(q)
    gs = qn @ index.group_keys + index.group_mask
    probed = np.argsort(-gs, axis=1, kind="stable")[:, :index.probes]
    cand = index.members[probed].reshape(len(q), -1)
    mask = index.member_mask[probed].reshape(len(q), -1)
    heads, w, proj, m, z = rescore(index.rows, index.answers, cand, qn, mask)
    with np.errstate(over="ignore", divide="ignore"):
        rest = index.group_sizes[None, :] * np.exp(np.maximum(gs - m, np.float32(EXP_FLOOR)))
        np.put_along_axis(rest, probed, np.float32(0), axis=1)  # empty groups have size 0: they add nothing
        skipped = rest.sum(axis=1, keepdims=True, dtype=np.float32)
        est = np.float32(1) / (np.float32(1) + z / skipped)
    return Routed(proj.astype(np.float32), heads.astype(np.int64), w.astype(np.float32), est[:, 0].astype(np.float32))
