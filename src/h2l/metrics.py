"""Student-vs-teacher fidelity metrics, shared by training, verification and the benchmarks.

:data:`NORM_EPS` is the one guarded epsilon of every normaliser in h2l (queries in the
teacher and its graphs, cosines here, the top cluster of ``ask``): a zero row divides by
eps and stays zero, so nothing downstream ever sees NaN.
"""

from __future__ import annotations

import numpy as np

#: Floor on every vector norm h2l divides by: ``x / max(‖x‖, NORM_EPS)`` (shared with the ONNX graphs).
NORM_EPS = 1e-12


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length in float64; a zero row stays zero (never NaN)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64 (a zero row gives 0, not NaN)."""
    return (unit_rows(a) * unit_rows(b)).sum(axis=1)


def nearest_answer(x: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Index of the answer embedding nearest (by cosine) to each row of x (a zero answer row scores 0)."""
    return np.argmax(np.asarray(x, np.float64) @ unit_rows(answers).T, axis=1)


def fidelity(student: np.ndarray, teacher: np.ndarray, answers: np.ndarray) -> dict:
    """Mean, min and p5 cosine, and top-1 nearest-answer agreement, of student vs teacher outputs."""
    cos = cosine(student, teacher)
    agree = nearest_answer(student, answers) == nearest_answer(teacher, answers)
    return {"n": int(len(cos)), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "p5_cosine": float(np.percentile(cos, 5)), "top1_agreement": float(agree.mean())}
