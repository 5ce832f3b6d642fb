"""The training stream: fresh queries around and between centroids, labelled by the teacher on the fly.

Training on a fixed set of user queries memorises them (the seed's 0.99 on
its training set is 0.89 on held-out queries).  Every batch here is new:

* ``centroid_mix`` — a Dirichlet(1) mix of 1..``max_centroids`` random centroids;
* ``perturbed``    — one user query;
* ``pairs``        — a uniform convex mix of two user queries;

each normalised and then moved by a noise vector whose norm is drawn from
U(``noise_min``, ``noise_max``): isotropic, or (with probability
``shaped_noise``) shaped like the covariance of the user queries (of the
centroids when there are none).  Without user queries the whole batch is
centroid mixes, so distillation works from the teacher alone.  Held-out
queries never enter the sampler.

Everything runs on the training device with a generator on that device:
the k distinct centroids of a mix are k sequential uniform draws with index
shifting (O(batch·k²), never a batch × N matrix), and the teacher labels
the batch there too.  Nothing here reads a value back to the host, so a
CUDA step queues without a sync.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import InputError
from ..model.teacher import NORM_EPS, Teacher


@dataclass(frozen=True)
class SamplerMix:
    centroid_mix: float = 0.5
    perturbed: float = 0.25
    pairs: float = 0.25
    max_centroids: int = 3
    neighbours: float = 0.0
    noise_min: float = 0.2
    noise_max: float = 2.0
    shaped_noise: float = 0.5

    def validate(self) -> "SamplerMix":
        parts = (self.centroid_mix, self.perturbed, self.pairs)
        if min(parts) < 0 or sum(parts) <= 0:
            raise InputError(f"sampler mix {parts} must be ≥ 0 with a positive sum", "e.g. --mix 0.5,0.25,0.25")
        if not 0 <= self.noise_min <= self.noise_max or self.max_centroids < 1 or not 0 <= self.shaped_noise <= 1 \
                or not 0 <= self.neighbours <= 1:
            raise InputError(f"invalid sampler settings {self}", "use 0 ≤ noise_min ≤ noise_max, max_centroids ≥ 1")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class TeacherTorch:
    """The teacher's projection in torch, for labelling batches without leaving the device."""

    def __init__(self, teacher: Teacher, device: torch.device | str = "cpu") -> None:
        self.keys = torch.from_numpy(teacher.keys).to(device)
        self.answers = torch.from_numpy(teacher.answers).to(device)

    @torch.no_grad()
    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        qn = q / q.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
        return torch.softmax(qn @ self.keys, dim=1) @ self.answers


def _nearest(c: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor | None:
    """(N, k) indices of each centroid's k nearest other centroids (cosine); None when N is huge."""
    n = len(c)
    if n > 65536:
        return None
    k = min(k, n - 1)
    out = []
    for i in range(0, n, chunk):
        sim = c[i:i + chunk] @ c.T
        sim[torch.arange(len(sim)), torch.arange(i, i + len(sim))] = -2.0
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def _noise_factor(x: np.ndarray) -> torch.Tensor:
    """A (d, d) matrix L with L Lᵀ ∝ cov(x): multiplies white noise into shaped noise."""
    x = x.astype(np.float64)
    cov = np.cov((x - x.mean(axis=0)).T) if len(x) > 1 else np.eye(x.shape[1])
    vals, vecs = np.linalg.eigh(np.atleast_2d(cov))
    vals = np.clip(vals, vals.max() * 1e-6, None)
    return torch.from_numpy((vecs * np.sqrt(vals)).astype(np.float32))


def distinct_indices(n: int, k: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, k) int64: k distinct indices in [0, n) per row, a uniformly random ordered k-subset.

    Draw j picks r ~ U{0, …, n−j−1} and shifts it past the j earlier picks in
    ascending order (r ≥ s → r + 1), which maps the n−j free slots onto the
    unused indices one to one.  Cost O(batch·k²), independent of n.
    """
    dev = generator.device
    picks: list[torch.Tensor] = []
    for j in range(k):
        r = torch.randint(0, n - j, (batch,), generator=generator, device=dev)
        if picks:
            for s in torch.stack(picks, dim=1).sort(dim=1).values.unbind(dim=1):
                r = r + (r >= s).to(r.dtype)
        picks.append(r)
    return torch.stack(picks, dim=1)


class QueryStream:
    """Draws batches (queries, teacher targets) from a seeded ``torch.Generator`` on its device."""

    def __init__(self, teacher: Teacher, user_queries: np.ndarray | None, mix: SamplerMix,
                 generator: torch.Generator) -> None:
        self.mix = mix.validate()
        self.gen = generator
        dev = self.device = generator.device
        self.centroids = F.normalize(torch.from_numpy(teacher.centroids), dim=1).to(dev)
        users = None if user_queries is None or len(user_queries) == 0 else user_queries
        self.users = None if users is None else \
            F.normalize(torch.from_numpy(np.asarray(users, np.float32)), dim=1).to(dev)
        self.factor_t = _noise_factor(users if users is not None else teacher.centroids).T.contiguous().to(dev)
        weights = [mix.centroid_mix, mix.perturbed if users is not None else 0.0,
                   mix.pairs if users is not None and len(users) > 1 else 0.0]
        if sum(weights) == 0:
            weights = [1.0, 0.0, 0.0]
        self.weights = torch.tensor(weights, dtype=torch.float64)
        # kind of each row = how many cumulative-share thresholds a uniform draw passes (no host sync)
        self._cuts = torch.cumsum(self.weights / self.weights.sum(), 0)[:-1].to(dev, torch.float32)
        self.teacher = TeacherTorch(teacher, dev)
        self.near = _nearest(self.centroids, 8) if mix.neighbours > 0 and len(self.centroids) > 2 else None
        self._arange_k = torch.arange(min(self.mix.max_centroids, len(self.centroids)), device=dev)

    def _uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen, device=self.device)

    def sample(self, batch: int) -> torch.Tensor:
        """``batch`` fresh queries (not normalised: the noise sets their spread)."""
        return self.sample_with_kinds(batch)[0]

    def sample_with_kinds(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and each row's kind (0 centroid mix, 1 perturbed user query, 2 pair of user queries)."""
        dev, gen = self.device, self.gen
        kinds = (self._uniform(batch, 1) >= self._cuts[None, :]).sum(dim=1)
        n, d = self.centroids.shape
        k = min(self.mix.max_centroids, n)
        idx = distinct_indices(n, k, batch, gen)
        if self.near is not None:  # some mixes take their partners among the first centroid's neighbours
            pick = torch.randint(0, self.near.shape[1], (batch, k - 1), generator=gen, device=dev)
            local = self.near[idx[:, :1].expand(-1, k - 1), pick]
            use = (self._uniform(batch, 1) < self.mix.neighbours).expand(-1, k - 1)
            idx = torch.cat([idx[:, :1], torch.where(use, local, idx[:, 1:])], dim=1)
        counts = torch.randint(1, k + 1, (batch,), generator=gen, device=dev)
        w = -torch.log(self._uniform(batch, k).clamp_min(1e-12))  # Exp(1) draws → Dirichlet(1) once normalised
        w = w * (self._arange_k[None, :] < counts[:, None])
        base = torch.einsum("bk,bkd->bd", w / w.sum(dim=1, keepdim=True), self.centroids[idx])
        if self.users is not None:
            m = len(self.users)
            i = torch.randint(0, m, (batch,), generator=gen, device=dev)
            j = torch.randint(0, m, (batch,), generator=gen, device=dev)
            a = self._uniform(batch, 1)
            base = torch.where((kinds == 1)[:, None], self.users[i], base)
            base = torch.where((kinds == 2)[:, None], a * self.users[i] + (1 - a) * self.users[j], base)
        base = F.normalize(base, dim=1)
        white = torch.randn(batch, d, generator=gen, device=dev)
        shaped = white @ self.factor_t
        use_shaped = self._uniform(batch, 1) < self.mix.shaped_noise
        noise = F.normalize(torch.where(use_shaped, shaped, white), dim=1)
        scale = self.mix.noise_min + (self.mix.noise_max - self.mix.noise_min) * self._uniform(batch, 1)
        return base + noise * scale, kinds

    def batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.sample(batch)
        return q, self.teacher(q)
