"""Fidelity metrics on their own, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from h2l.metrics import cosine, fidelity, nearest_answer


def test_cosine_rowwise_and_zero_rows():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]], np.float32)
    b = np.array([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0], [-1.0, 0.0]], np.float32)
    np.testing.assert_allclose(cosine(a, b), [0.0, 1.0, 0.0, -1.0], atol=1e-12)
    assert cosine(a, b).dtype == np.float64 and not np.isnan(cosine(a, b)).any()


def test_nearest_answer_uses_cosine_not_dot():
    answers = np.array([[10.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x = np.array([[0.1, 1.0], [1.0, 0.05], [1.0, 0.9]])
    assert nearest_answer(x, answers).tolist() == [1, 0, 2]


def test_fidelity_values():
    answers = np.eye(3)
    teacher = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0.1, 0]])
    student = np.array([[1.0, 0, 0], [0, 1.0, 0.1], [0.2, 0, 1.0], [0.1, 1.0, 0]])
    f = fidelity(student, teacher, answers)
    cos = cosine(student, teacher)
    assert f["n"] == 4
    assert f["mean_cosine"] == pytest.approx(cos.mean()) and f["min_cosine"] == pytest.approx(cos.min())
    assert f["p5_cosine"] == pytest.approx(np.percentile(cos, 5))
    assert f["top1_agreement"] == pytest.approx(0.75)  # the last row's nearest answer flips 0 → 1
    assert fidelity(teacher, teacher, answers)["min_cosine"] == pytest.approx(1.0)
