"""A library that minds its manners: no global logging changes, no mutation of the caller's objects, and
``==`` on frozen dataclasses that hold arrays does not raise."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
import torch

from h2l.model.synthetic import synthetic_teacher
from h2l.model.teacher import QuerySet


@pytest.fixture
def logging_state():
    """Snapshot of every logger's level and handlers, and the root's; compared after the call."""
    def snap():
        loggers = {name: (lg.level, tuple(lg.handlers), lg.propagate, lg.disabled)
                   for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
        return logging.root.level, tuple(logging.root.handlers), loggers
    logging.root.setLevel(logging.WARNING)
    before = snap()
    yield lambda: (before, snap())


def _student(normalize=True):
    from h2l.model.student import ProjectionTransformer, StudentConfig

    torch.manual_seed(0)
    return ProjectionTransformer(StudentConfig(16, 2, 1, 32, normalize_input=normalize))


def test_int8_quantization_leaves_logging_alone(logging_state):
    from h2l.exporters.onnx_student import make_folded_student_model
    from h2l.exporters.quantize import make_int8_student_model
    from h2l.model.student import fold

    make_int8_student_model(make_folded_student_model(fold(_student().eval()), {}))
    before, after = logging_state()
    assert after[0] == before[0] == logging.WARNING and after[1] == before[1]
    changed = {k for k in before[2] if k in after[2] and before[2][k] != after[2][k]}
    assert not changed, changed


def test_unfolded_export_leaves_logging_and_the_callers_module_alone(logging_state):
    from h2l.exporters.onnx_student import make_unfolded_student_model

    model = _student()
    model.train()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    make_unfolded_student_model(model, {})
    assert model.training, "the caller's module was switched to eval mode"
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())
    before, after = logging_state()
    assert after[0] == before[0] and after[1] == before[1]
    changed = {k for k in before[2] if k in after[2] and before[2][k][0] != after[2][k][0]}
    assert not changed, f"logger levels changed: {changed}"


SPY = """
import os
import onnxruntime as ort

_real = ort.set_default_logger_severity


def _spy(level):
    with open(os.environ["H2L_TEST_SEVERITY_LOG"], "a") as f:
        f.write(f"{level}\\n")
    _real(level)


ort.set_default_logger_severity = _spy
"""


def test_cuda_probe_silences_onnxruntime_in_its_child_only(monkeypatch, tmp_path):
    """The probe really runs (it is called directly: cuda_status skips it on a wheel without CUDA) and lowers
    the onnxruntime log severity in its child process, seen there by a sitecustomize spy; the parent,
    where callers live, never calls set_default_logger_severity."""
    from h2l.runtime import sessions

    (tmp_path / "sitecustomize.py").write_text(SPY)
    log = tmp_path / "severity.log"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the probe puts h2l's own folder first, then this
    monkeypatch.setenv("H2L_TEST_SEVERITY_LOG", str(log))
    calls = []
    monkeypatch.setattr(ort, "set_default_logger_severity", lambda level: calls.append(level))
    ok, reason = sessions._probe_cuda()
    assert calls == [], "the process-wide onnxruntime log severity was changed in the caller's process"
    assert log.read_text().split() == ["4"], "the child did not run the probe (or did not silence itself)"
    if sessions.CUDA not in ort.get_available_providers():
        assert (ok, reason) == (False, "onnxruntime fell back to CPU (no usable GPU or CUDA/cuDNN libraries)")
    else:  # pragma: no cover - a GPU wheel
        assert ok or "fell back to CPU" in reason or "failed" in reason, reason


def test_equality_on_array_dataclasses_does_not_raise():
    a = synthetic_teacher(4, 8, queries_per_head=2, heldout_per_head=1, seed=1)
    b = synthetic_teacher(4, 8, queries_per_head=2, heldout_per_head=1, seed=1)
    assert a == a and (a == b) is False and a != b  # identity; content is compared by fingerprint
    assert a.fingerprint() == b.fingerprint()
    assert len({a, b}) == 2  # hashable by identity
    q = QuerySet(np.zeros((1, 2)), np.zeros(1), np.zeros((0, 2)), np.zeros(0))
    assert q == q and q != QuerySet(np.zeros((1, 2)), np.zeros(1), np.zeros((0, 2)), np.zeros(0))


def test_equality_on_student_dataclasses_does_not_raise():
    import torch

    from h2l.distill.checkpoint import StudentCheckpoint
    from h2l.model.student import ProjectionTransformer, StudentConfig, fold

    cfg = StudentConfig(16, heads=2, layers=1, ff_dim=8)
    torch.manual_seed(0)
    model = ProjectionTransformer(cfg)
    f1, f2 = fold(model), fold(model)
    assert f1 == f1 and f1 != f2 and f1.layers[0] != f2.layers[0]  # by identity, never an ambiguous-truth error
    args = dict(config=cfg, state_dict=model.state_dict(), teacher_sha256="ab" * 32, train_config={},
                metrics={}, history={}, complete=True, resume=None)
    c1, c2 = StudentCheckpoint(**args), StudentCheckpoint(**args)
    assert c1 == c1 and c1 != c2
