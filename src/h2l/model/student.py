"""The student: one-token transformer variants, the exact fold, and the numpy reference of the folded graph.

With the query as a one-token sequence every attention softmax is exactly 1,
so self-attention is ``Wo(Wv x + bv) + bo`` and ``x + attn(x)`` is the linear
map ``(I + Wo·Wv) x + b``.  Three architectures (``StudentConfig.arch``):

* ``transformer`` — the literal seed design (``nn.TransformerEncoder``); its Q/K
  projections exist but get exactly zero gradient.  Kept for comparison and for
  checkpoints written before ``arch`` existed.
* ``lean`` (default) — the same function with Q/K dropped from the training graph:
  ``LN(x + Wo(Wv x + bv) + bo)`` then the GELU feed-forward, post-norm.
* ``memory`` — ``lean`` plus a learned memory read ``softmax(q̂·Kᵀ)·V`` with
  M = ``slots`` keys/values (M ≪ N), initialised from M teacher heads: a
  compressed teacher that the residual stack corrects.  Cost grows with M.

:func:`fold` turns any of them into a :class:`FoldedStudent` of plain matrices
(Q/K dropped, Wo·Wv and the input projection folded), which the ONNX exporter
writes and numpy can evaluate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from .teacher import NORM_EPS

ARCHS = ("lean", "transformer", "memory")


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of a student; stored in checkpoints and manifests."""

    dim: int
    heads: int = 4
    layers: int = 2
    ff_dim: int = 512
    dropout: float = 0.0
    normalize_input: bool = True
    arch: str = "lean"
    slots: int = 0  # memory slots M (arch "memory" only)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        # checkpoints from before ``arch`` existed hold the literal transformer
        return cls(**{"arch": "transformer", **{k: d[k] for k in cls.__dataclass_fields__ if k in d}})

    def validate(self) -> "StudentConfig":
        if self.dim <= 0 or self.layers < 1 or self.ff_dim < 1 or self.heads < 1:
            raise InputError(f"invalid student size {self}", "use positive --heads, --layers and --ff-dim")
        if self.dim % self.heads:
            raise InputError(f"--heads {self.heads} does not divide d = {self.dim}",
                             f"pick a divisor of {self.dim} (see `h2l arch`)")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout {self.dropout} outside [0, 1)", "pass e.g. 0.0")
        if self.arch not in ARCHS:
            raise InputError(f"unknown student architecture {self.arch!r}", f"use one of {', '.join(ARCHS)}")
        if (self.arch == "memory") != (self.slots > 0) or self.slots < 0:
            raise InputError(f"--slots {self.slots} with --arch {self.arch}",
                             "pass --slots M ≥ 1 with --arch memory only")
        if self.arch == "memory" and not self.normalize_input:
            raise InputError("the memory student reads the normalised query", "keep normalize_input")
        return self


class LeanLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` (post-norm, GELU) on one token, without the dead Q/K projections.

    Parameter names follow the literal layer (``self_attn.out_proj``, ``linear1`` …)
    so :func:`fold` reads both the same way.
    """

    def __init__(self, d: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.v_proj.weight)
        nn.init.zeros_(self.v_proj.bias)
        nn.init.zeros_(self.out_proj.bias)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.out_proj(self.v_proj(x))))
        return self.norm2(x + self.drop(self.linear2(self.drop(F.gelu(self.linear1(x))))))


class ProjectionTransformer(nn.Module):
    """Linear(d,d) → L one-token layers → Linear(d,d) (+ the memory read for ``memory``).

    ``normalize_input`` L2-normalises q first (eps floor as in the teacher): the
    teacher only sees q's direction, so the student is made exactly scale-invariant too.
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config.validate()
        d = config.dim
        self.input_proj = nn.Linear(d, d)
        if config.arch == "transformer":
            layer = nn.TransformerEncoderLayer(d, config.heads, config.ff_dim, config.dropout,
                                               activation="gelu", batch_first=True, norm_first=False)
            self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        else:
            self.layers = nn.ModuleList(LeanLayer(d, config.ff_dim, config.dropout) for _ in range(config.layers))
        self.output_proj = nn.Linear(d, d)
        if config.arch == "memory":
            self.mem_keys = nn.Parameter(torch.randn(config.slots, d) / d ** 0.5)
            self.mem_values = nn.Parameter(torch.zeros(config.slots, d))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if self.config.normalize_input:
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
        x = self.input_proj(q)
        if self.config.arch == "transformer":
            x = self.encoder(x.unsqueeze(1)).squeeze(1)
        else:
            for layer in self.layers:
                x = layer(x)
        y = self.output_proj(x)
        if self.config.arch == "memory":
            y = y + torch.softmax(q @ self.mem_keys.T, dim=-1) @ self.mem_values
        return y

    @torch.no_grad()
    def init_memory(self, keys: np.ndarray, answers: np.ndarray, seed: int) -> None:
        """Start the memory as a compressed teacher: M seeded heads' keys (centroid/τ) and answers.

        The residual stack's output projection starts at zero, so step 0 is
        exactly that M-head teacher and training only has to learn the correction.
        """
        if self.config.arch != "memory":
            return
        n = keys.shape[1]
        m = self.config.slots
        pick = np.random.default_rng(seed).permutation(n)[:m] if m <= n else np.arange(m) % n
        self.mem_keys.copy_(torch.from_numpy(np.ascontiguousarray(keys.T[pick], np.float32)))
        self.mem_values.copy_(torch.from_numpy(np.ascontiguousarray(answers[pick], np.float32)))
        nn.init.zeros_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def block_pairs(self):
        """Per layer: (Wv, bv, Wo, bo, the layer) for folding, whatever the architecture."""
        d = self.config.dim
        if self.config.arch == "transformer":
            for layer in self.encoder.layers:
                a = layer.self_attn
                yield (a.in_proj_weight[2 * d:], a.in_proj_bias[2 * d:], a.out_proj.weight, a.out_proj.bias, layer)
        else:
            for layer in cast(Iterable[LeanLayer], self.layers):  # a ModuleList of LeanLayers (see __init__)
                yield (layer.v_proj.weight, layer.v_proj.bias, layer.out_proj.weight, layer.out_proj.bias, layer)

    def lean_state_dict_from(self, literal: "ProjectionTransformer") -> None:
        """Copy a literal transformer's live weights into this lean model (Q/K dropped): same function."""
        d = self.config.dim
        sd = {"input_proj.weight": literal.input_proj.weight, "input_proj.bias": literal.input_proj.bias,
              "output_proj.weight": literal.output_proj.weight, "output_proj.bias": literal.output_proj.bias}
        for i, lay in enumerate(literal.encoder.layers):
            p = f"layers.{i}."
            a = lay.self_attn
            sd |= {p + "v_proj.weight": a.in_proj_weight[2 * d:], p + "v_proj.bias": a.in_proj_bias[2 * d:],
                   p + "out_proj.weight": a.out_proj.weight, p + "out_proj.bias": a.out_proj.bias}
            for name in ("linear1", "linear2", "norm1", "norm2"):
                for t in ("weight", "bias"):
                    sd[p + f"{name}.{t}"] = getattr(getattr(lay, name), t)
        self.load_state_dict({k: v.detach().clone() for k, v in sd.items()})


# ------------------------------------------------------------------ folding

@dataclass(frozen=True, eq=False)  # holds arrays: a generated __eq__ would raise
class FoldedLayer:
    w_attn: np.ndarray  # (d, d), applied as x @ w_attn: (I + Wo·Wv)ᵀ, input projection folded in layer 0
    b_attn: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    ln1_eps: float
    w1: np.ndarray  # (d, F)
    b1: np.ndarray
    w2: np.ndarray  # (F, d)
    b2: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray
    ln2_eps: float


@dataclass(frozen=True, eq=False)  # holds arrays: a generated __eq__ would raise
class FoldedStudent:
    """A student as plain float32 matrices; ``forward`` is the numpy reference of the folded graph."""

    config: StudentConfig
    layers: tuple[FoldedLayer, ...]
    w_out: np.ndarray  # (d, d)
    b_out: np.ndarray
    mem_keys: np.ndarray | None = None  # (M, d), arch "memory"
    mem_values: np.ndarray | None = None  # (M, d)

    def forward(self, q: np.ndarray) -> np.ndarray:
        x = np.asarray(q, np.float32)
        if self.config.normalize_input:
            n = np.sqrt((x * x).sum(axis=1, keepdims=True))
            x = x / np.maximum(n, np.float32(NORM_EPS))
        qn = x
        for lay in self.layers:
            x = _layer_norm(x @ lay.w_attn + lay.b_attn, lay.ln1_w, lay.ln1_b, lay.ln1_eps)
            h = x @ lay.w1 + lay.b1
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
            x = _layer_norm(x + h @ lay.w2 + lay.b2, lay.ln2_w, lay.ln2_b, lay.ln2_eps)
        y = x @ self.w_out + self.b_out
        if self.mem_keys is not None:
            s = qn @ self.mem_keys.T
            e = np.exp(s - s.max(axis=1, keepdims=True))
            y = y + (e / e.sum(axis=1, keepdims=True)) @ self.mem_values
        return y.astype(np.float32)


def _layer_norm(x, w, b, eps):
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _erf(x):
    return torch.erf(torch.from_numpy(np.asarray(x, np.float64))).numpy()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def fold(model: ProjectionTransformer) -> FoldedStudent:
    """Fold attention and the input projection exactly (float64 products, float32 result)."""
    cfg = model.config
    d = cfg.dim
    eye = np.eye(d)
    w_prev, b_prev = _np(model.input_proj.weight), _np(model.input_proj.bias)  # x0 = W_prev q + b_prev
    layers = []
    f32 = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
    for wv, bv, wo, bo, layer in model.block_pairs():
        if getattr(layer, "norm_first", False):  # pragma: no cover - the class only builds post-norm
            raise InputError("pre-norm layers cannot be folded", "export with --no-fold")
        wv, bv, wo, bo = _np(wv), _np(bv), _np(wo), _np(bo)
        m = eye + wo @ wv
        w_attn = m @ w_prev
        b_attn = m @ b_prev + wo @ bv + bo
        layers.append(FoldedLayer(
            f32(w_attn.T), f32(b_attn), f32(_np(layer.norm1.weight)), f32(_np(layer.norm1.bias)),
            float(layer.norm1.eps), f32(_np(layer.linear1.weight).T), f32(_np(layer.linear1.bias)),
            f32(_np(layer.linear2.weight).T), f32(_np(layer.linear2.bias)), f32(_np(layer.norm2.weight)),
            f32(_np(layer.norm2.bias)), float(layer.norm2.eps)))
        w_prev, b_prev = eye, np.zeros(d)
    mem = (f32(_np(model.mem_keys)), f32(_np(model.mem_values))) if cfg.arch == "memory" else (None, None)
    return FoldedStudent(cfg, tuple(layers), f32(_np(model.output_proj.weight).T),
                         f32(_np(model.output_proj.bias)), *mem)


@torch.no_grad()
def torch_forward(model: ProjectionTransformer, q: np.ndarray) -> np.ndarray:
    """Run the unfolded model in eval mode on CPU float32 (the export's source of truth)."""
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(q, np.float32))).numpy()


def choose_student(n: int, dim: int, *, arch: str | None = None, heads: int | None = None,
                   layers: int | None = None, ff_dim: int | None = None, slots: int | None = None,
                   steps: int | None = None) -> tuple[StudentConfig, int]:
    """The student and step count for a teacher of N heads: flags given win, the rest comes from the
    recipe for N (``h2l arch N``) when the architecture matches it.  Shared by ``h2l distill`` and
    :func:`h2l.distill_teacher`, so the CLI and the API pick the same student."""
    from .sizing import recipe

    rec = recipe(n, dim)
    kind = arch or ("memory" if slots else rec.arch if (heads, layers, ff_dim) == (None,) * 3 else "lean")
    same = kind == rec.arch
    pick = lambda v, default: default if v is None else v  # noqa: E731
    cfg = StudentConfig(dim, pick(heads, rec.heads), pick(layers, rec.layers if same else 2),
                        pick(ff_dim, rec.ff_dim if same else 512), arch=kind,
                        slots=pick(slots, (rec.slots if same else max(256, n // 4)) if kind == "memory" else 0))
    return cfg, pick(steps, rec.steps)
