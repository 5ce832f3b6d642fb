"""h2l.runtime.cuda_graph: what can be checked without a GPU.

Capture and replay need a CUDA device (scripts/gpu_check.sh runs them when one is lent).  The evidence
they are judged by does not: onnxruntime's CPU profiler writes the same per-node kernel events, so the
parser and the verdict are tested here on real profiles, and the refusal on a machine without CUDA is
the real one.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from h2l.errors import ProviderError
from h2l.runtime.cuda_graph import _node_events_per_run, make_graph_session, replay_evidence, replay_verdict
from h2l.runtime.sessions import cuda_status


def _cpu_profile(model: bytes, runs: int, tmp_path) -> tuple[str, int]:
    """A real onnxruntime profile of ``runs`` CPU runs, and how many nodes the optimized graph executes."""
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "profile")
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    q = np.ones((2, sess.get_inputs()[0].shape[1]), np.float32)
    for _ in range(runs):
        sess.run(None, {sess.get_inputs()[0].name: q})
    path = sess.end_profiling()
    nodes = {e["name"] for e in json.loads(open(path).read()) if e.get("cat") == "Node"}
    return path, len(nodes)


def test_node_events_are_counted_per_run(teacher_bytes, tmp_path):
    path, kernels = _cpu_profile(teacher_bytes, 7, tmp_path)
    counts = _node_events_per_run(path, 7)
    assert kernels > 0
    assert counts == [kernels] * 7  # every run executed every node, and no event fell into the wrong run
    assert _node_events_per_run(path, 3) == [kernels] * 3  # the last runs only


def test_plain_runs_are_never_judged_a_replay(teacher_bytes, tmp_path):
    path, _ = _cpu_profile(teacher_bytes, 12, tmp_path)
    counts = _node_events_per_run(path, 12)
    assert not replay_verdict(counts, outputs_match=True)  # node kernels ran in the last runs: no graph


def test_replay_verdict_needs_capture_silence_and_equal_outputs():
    capture_then_silent = [9, 0, 0, 0, 0, 0, 0, 0]
    assert replay_verdict(capture_then_silent, outputs_match=True)
    assert not replay_verdict(capture_then_silent, outputs_match=False)
    assert not replay_verdict([0] * 8, outputs_match=True)  # a profiler that saw nothing proves nothing
    assert not replay_verdict([9, 0, 0, 0, 0, 9, 0, 0], outputs_match=True)  # one late run was not replayed
    assert not replay_verdict([9, 0], outputs_match=True)  # too few runs to tell


@pytest.mark.skipif(cuda_status()[0], reason="a usable CUDA device: gpu_check.sh measures the real thing")
def test_without_cuda_sessions_refuse_and_evidence_says_why(teacher_bytes):
    with pytest.raises(ProviderError, match="CUDA requested but unusable") as err:
        make_graph_session(teacher_bytes, 1)
    assert err.value.exit_code == 7
    ev = replay_evidence(teacher_bytes, batch=1, runs=5)
    assert ev["replayed"] is False and "CUDA" in ev["reason"]
