"""Student-vs-teacher fidelity metrics, shared by training, verification and the benchmarks."""

from __future__ import annotations

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64 (a zero row gives 0, not NaN)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-30)


def nearest_answer(x: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Index of the answer embedding nearest (by cosine) to each row of x."""
    a = np.asarray(answers, np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return np.argmax(np.asarray(x, np.float64) @ a.T, axis=1)


def fidelity(student: np.ndarray, teacher: np.ndarray, answers: np.ndarray) -> dict:
    """Mean, min and p5 cosine, and top-1 nearest-answer agreement, of student vs teacher outputs."""
    cos = cosine(student, teacher)
    agree = nearest_answer(student, answers) == nearest_answer(teacher, answers)
    return {"n": int(len(cos)), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "p5_cosine": float(np.percentile(cos, 5)), "top1_agreement": float(agree.mean())}
