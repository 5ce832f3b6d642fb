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


def test_a_zero_answer_row_gives_zero_cosine_not_a_nan_winner():
    """Issue 20.1: an unguarded a/‖a‖ made a NaN column, and argmax returned it for every row (failed before)."""
    answers = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    x = np.array([[0.0, 1.0], [1.0, 0.1]])
    assert nearest_answer(x, answers).tolist() == [2, 0]
    f = fidelity(x, x[::-1], answers)
    assert f["top1_agreement"] == 0.0 and np.isfinite(f["mean_cosine"])


def test_bundle_top_cluster_of_a_projection_never_picks_nan():
    from h2l.bundle.answers import top
    from h2l.exporters import PROJECTED_NAME
    from h2l.metrics import NORM_EPS, unit_rows

    answers = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], np.float32)
    k, cos = top("student", {PROJECTED_NAME: np.array([[0.0, 2.0], [0.0, 0.0]], np.float32)}, answers)
    assert k.tolist() == [2, 0] and np.isfinite(cos).all() and cos[1] == 0.0  # a zero projection: cosine 0
    assert NORM_EPS == 1e-12 and not np.isnan(unit_rows(np.zeros((2, 3)))).any()
