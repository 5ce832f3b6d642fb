"""h2l verify: integrity, contract, parity gates, providers, exit codes (real sessions, real files)."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import flip_byte, rehash
from h2l.cli import app
from h2l.export import export_onnx
from h2l.runtime.sessions import cuda_status


@pytest.fixture
def bundle(tmp_path, small_teacher):
    export_onnx(small_teacher, tmp_path / "b")
    return tmp_path / "b"


def test_cli_verify_passes_and_prints_table(runner, bundle):
    r = runner.invoke(app, ["verify", str(bundle), "--provider", "cpu"])
    assert r.exit_code == 0, r.output
    assert "vs_numpy:golden:batch32" in r.stdout and "verify passed" in r.stdout


def test_cli_verify_json(runner, bundle):
    r = runner.invoke(app, ["verify", str(bundle), "--provider", "cpu", "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["passed"] and {c["check"] for c in doc["checks"]} >= {"io_contract", "golden:routing_weights"}


def test_flipped_byte_in_teacher_onnx_fails_integrity(runner, bundle):
    flip_byte(bundle / "teacher.onnx")
    r = runner.invoke(app, ["verify", str(bundle)])
    assert r.exit_code == 5
    assert "teacher.onnx fails its sha256 check" in r.stderr and r.stderr.count("\n") == 1


def test_perturbed_weights_fail_parity(runner, bundle):
    """Weights changed and re-hashed: integrity passes, the golden vectors catch it."""
    p = bundle / "teacher.onnx"
    m = onnx.load(str(p))
    for init in m.graph.initializer:
        if init.name == "answers":
            arr = numpy_helper.to_array(init).copy()
            arr[0] += 0.01
            init.CopyFrom(numpy_helper.from_array(arr, "answers"))
    p.write_bytes(m.SerializeToString())
    rehash(bundle, "teacher.onnx")
    r = runner.invoke(app, ["verify", str(bundle), "--provider", "cpu"])
    assert r.exit_code == 6, r.output
    assert "golden:projected_embedding" in r.stderr and "parity failed" in r.stderr


def test_contract_mismatch_fails_integrity(runner, bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["models"]["teacher"]["outputs"][1]["name"] = "weights"
    (bundle / "manifest.json").write_text(json.dumps(m))
    r = runner.invoke(app, ["verify", str(bundle), "--provider", "cpu"])
    assert r.exit_code == 5 and "io_contract" in r.stderr


def test_unknown_schema_version(runner, bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(m))
    r = runner.invoke(app, ["verify", str(bundle)])
    assert r.exit_code == 5 and "schema_version 99" in r.stderr


def test_missing_manifest_is_not_a_bundle(runner, bundle):
    (bundle / "manifest.json").unlink()
    r = runner.invoke(app, ["verify", str(bundle)])
    assert r.exit_code == 5 and "no manifest.json" in r.stderr


@pytest.mark.skipif(cuda_status()[0], reason="a usable GPU is present")
def test_cuda_requested_without_gpu_is_a_provider_error(runner, bundle):
    r = runner.invoke(app, ["verify", str(bundle), "--provider", "cuda"])
    assert r.exit_code == 7 and "needs CUDA, which is unusable here" in r.stderr


@pytest.mark.skipif(cuda_status()[0], reason="a usable GPU is present")
def test_auto_reports_cuda_skipped(runner, bundle):
    r = runner.invoke(app, ["verify", str(bundle), "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["provider"] == "cpu" and doc["skipped"][0]["provider"] == "cuda"


def test_queries_npy_wrong_dimension(runner, bundle, tmp_path):
    np.save(tmp_path / "q.npy", np.zeros((3, 7), np.float32))
    r = runner.invoke(app, ["verify", str(bundle), "--queries", str(tmp_path / "q.npy")])
    assert r.exit_code == 3 and "dimension 7" in r.stderr


def test_summary_lines_name_provider_and_source(runner, tmp_path):
    """Rich markup must not swallow '[cpu, golden]' in the human summary."""
    from h2l.distill.train import TrainConfig, distill
    from h2l.model.student import StudentConfig
    from h2l.model.synthetic import synthetic_teacher

    t = synthetic_teacher(6, 16, queries_per_head=2, heldout_per_head=1, seed=1)
    distill(t, tmp_path / "s.pt", student=StudentConfig(16, 2, 1, 16), quiet=True,
            config=TrainConfig(steps=20, batch_size=64, eval_every=10, n_val_sampled=16))
    export_onnx(t, tmp_path / "b", student=tmp_path / "s.pt", min_cosine=-1)
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu", "--min-cosine", "-1"])
    assert "student vs teacher [cpu, golden]" in r.stdout and "student vs teacher [cpu, sampled]" in r.stdout
