"""The student: ``ProjectionTransformer``, the (H, L) sizing rule and the exact fold.

With the query as a one-token sequence every attention softmax is exactly 1,
so self-attention is ``Wo(Wv x + bv) + bo`` and ``x + attn(x)`` is the linear
map ``(I + Wo·Wv) x + b``.  :func:`fold` turns a trained model into a
:class:`FoldedStudent` of plain matrices (Q/K dropped, Wo·Wv and the input
projection folded), which the ONNX exporter writes and numpy can evaluate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from .teacher import NORM_EPS


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of a student; stored in checkpoints and manifests."""

    dim: int
    heads: int = 4
    layers: int = 2
    ff_dim: int = 512
    dropout: float = 0.0
    normalize_input: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def validate(self) -> "StudentConfig":
        if self.dim <= 0 or self.layers < 1 or self.ff_dim < 1 or self.heads < 1:
            raise InputError(f"invalid student size {self}", "use positive --heads, --layers and --ff-dim")
        if self.dim % self.heads:
            raise InputError(f"--heads {self.heads} does not divide d = {self.dim}",
                             f"pick a divisor of {self.dim} (see `h2l arch`)")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout {self.dropout} outside [0, 1)", "pass e.g. 0.0")
        return self


class ProjectionTransformer(nn.Module):
    """Linear(d,d) → TransformerEncoder(L layers, H heads, GELU, post-norm) → Linear(d,d).

    The seed design, run on the query as a one-token sequence.  ``normalize_input``
    L2-normalises q first (eps floor as in the teacher): the teacher only sees
    q's direction, so the student is made exactly scale-invariant too.
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config.validate()
        d = config.dim
        self.input_proj = nn.Linear(d, d)
        layer = nn.TransformerEncoderLayer(d, config.heads, config.ff_dim, config.dropout,
                                           activation="gelu", batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.output_proj = nn.Linear(d, d)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if self.config.normalize_input:
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
        x = self.input_proj(q).unsqueeze(1)
        x = self.encoder(x)
        return self.output_proj(x.squeeze(1))


# ------------------------------------------------------------------ folding

@dataclass(frozen=True)
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


@dataclass(frozen=True)
class FoldedStudent:
    """A student as plain float32 matrices; ``forward`` is the numpy reference of the folded graph."""

    config: StudentConfig
    layers: tuple[FoldedLayer, ...]
    w_out: np.ndarray  # (d, d)
    b_out: np.ndarray

    def forward(self, q: np.ndarray) -> np.ndarray:
        x = np.asarray(q, np.float32)
        if self.config.normalize_input:
            n = np.sqrt((x * x).sum(axis=1, keepdims=True))
            x = x / np.maximum(n, np.float32(NORM_EPS))
        for lay in self.layers:
            x = _layer_norm(x @ lay.w_attn + lay.b_attn, lay.ln1_w, lay.ln1_b, lay.ln1_eps)
            h = x @ lay.w1 + lay.b1
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
            x = _layer_norm(x + h @ lay.w2 + lay.b2, lay.ln2_w, lay.ln2_b, lay.ln2_eps)
        return (x @ self.w_out + self.b_out).astype(np.float32)


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
    for layer in model.encoder.layers:
        if layer.norm_first:  # pragma: no cover - the class only builds post-norm
            raise InputError("pre-norm layers cannot be folded", "export with --no-fold")
        attn = layer.self_attn
        wv = _np(attn.in_proj_weight)[2 * d:]
        bv = _np(attn.in_proj_bias)[2 * d:]
        wo, bo = _np(attn.out_proj.weight), _np(attn.out_proj.bias)
        m = eye + wo @ wv
        w_attn = m @ w_prev
        b_attn = m @ b_prev + wo @ bv + bo
        f32 = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
        layers.append(FoldedLayer(
            f32(w_attn.T), f32(b_attn), f32(_np(layer.norm1.weight)), f32(_np(layer.norm1.bias)),
            float(layer.norm1.eps), f32(_np(layer.linear1.weight).T), f32(_np(layer.linear1.bias)),
            f32(_np(layer.linear2.weight).T), f32(_np(layer.linear2.bias)), f32(_np(layer.norm2.weight)),
            f32(_np(layer.norm2.bias)), float(layer.norm2.eps)))
        w_prev, b_prev = eye, np.zeros(d)
    return FoldedStudent(cfg, tuple(layers), np.ascontiguousarray(_np(model.output_proj.weight).T, np.float32),
                         np.ascontiguousarray(_np(model.output_proj.bias), np.float32))


@torch.no_grad()
def torch_forward(model: ProjectionTransformer, q: np.ndarray) -> np.ndarray:
    """Run the unfolded model in eval mode on CPU float32 (the export's source of truth)."""
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(q, np.float32))).numpy()


def gelu_check() -> float:  # pragma: no cover - debugging aid
    x = torch.linspace(-4, 4, 101)
    return float((F.gelu(x) - 0.5 * x * (1 + torch.erf(x / 2 ** 0.5))).abs().max())
