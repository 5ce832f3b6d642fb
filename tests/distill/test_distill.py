"""Distillation: loss, sampler, seeding, resume, and a small distill → export → verify end to end."""

import numpy as np
import pytest
import torch

from h2l.cli import app
from h2l.distill.checkpoint import load_checkpoint
from h2l.distill.sampler import QueryStream, SamplerMix
from h2l.distill.train import TrainConfig, distill, distill_loss, lr_factor
from h2l.errors import InputError
from h2l.model.student import StudentConfig
from h2l.model.synthetic import synthetic_teacher

SMALL = StudentConfig(32, heads=4, layers=1, ff_dim=64)


def tiny_cfg(**kw):
    return TrainConfig(**{"steps": 40, "batch_size": 128, "eval_every": 10, "seed": 0, "n_val_sampled": 64, **kw})


def test_loss_formula():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mse = ((s - t) ** 2).mean()
    cos = torch.tensor([1.0, 0.0]).mean()
    for lam in (0.0, 0.7, 1.0):
        assert torch.isclose(distill_loss(s, t, lam), (1 - lam) * mse + lam * (1 - cos))
    assert distill_loss(t, t, 0.7) == 0


def test_lr_schedule_warms_up_and_decays():
    cfg = TrainConfig(steps=100)
    assert lr_factor(0, cfg) < lr_factor(4, cfg) == 1.0
    assert lr_factor(99, cfg) < 0.01


def test_sampler_is_seeded_fresh_and_uses_only_train_queries(small_teacher):
    qs = small_teacher.queries
    mk = lambda seed: QueryStream(small_teacher, qs.train, SamplerMix(), torch.Generator().manual_seed(seed))  # noqa: E731
    a, b = mk(0), mk(0)
    qa, ta = a.batch(256)
    qb, tb = b.batch(256)
    assert torch.equal(qa, qb) and torch.equal(ta, tb)
    q2, _ = a.batch(256)
    assert not torch.equal(qa, q2)  # a stream, not epochs
    assert qa.shape == (256, 32)
    ref, _ = small_teacher.project(qa.numpy())
    assert np.abs(ta.numpy() - ref).max() < 1e-5  # labelled by the teacher
    held = torch.from_numpy(qs.heldout)
    assert torch.cdist(qa, held).min() > 1e-3  # held-out queries never appear


def test_sampler_without_user_queries(small_teacher):
    s = QueryStream(small_teacher, None, SamplerMix(), torch.Generator().manual_seed(0))
    assert s.weights.tolist() == [0.5, 0.0, 0.0]
    q, t = s.batch(64)
    assert torch.isfinite(q).all() and torch.isfinite(t).all()


def test_sampler_mix_validation():
    with pytest.raises(InputError, match="positive sum"):
        SamplerMix(0, 0, 0).validate()


def test_two_runs_with_one_seed_are_equal(tmp_path, small_teacher):
    a = distill(small_teacher, tmp_path / "a.pt", student=SMALL, config=tiny_cfg(), quiet=True)
    b = distill(small_teacher, tmp_path / "b.pt", student=SMALL, config=tiny_cfg(), quiet=True)
    assert a.checkpoint.history == b.checkpoint.history
    for k, v in a.checkpoint.state_dict.items():
        assert torch.equal(v, b.checkpoint.state_dict[k])
    c = distill(small_teacher, tmp_path / "c.pt", student=SMALL, config=tiny_cfg(seed=1), quiet=True)
    assert c.checkpoint.history != a.checkpoint.history


def test_resume_matches_uninterrupted(tmp_path, small_teacher):
    full = distill(small_teacher, tmp_path / "full.pt", student=SMALL, config=tiny_cfg(), quiet=True)
    part = tmp_path / "part.pt"
    distill(small_teacher, part, student=SMALL, config=tiny_cfg(), quiet=True, stop_after=20)
    assert not load_checkpoint(part).complete
    res = distill(small_teacher, part, student=SMALL, config=tiny_cfg(), quiet=True, resume=True)
    assert res.checkpoint.complete
    assert res.checkpoint.metrics["final"] == full.checkpoint.metrics["final"]
    assert res.checkpoint.history == full.checkpoint.history


def test_resume_refuses_other_config(tmp_path, small_teacher):
    p = tmp_path / "p.pt"
    distill(small_teacher, p, student=SMALL, config=tiny_cfg(), quiet=True, stop_after=10)
    with pytest.raises(InputError, match="another teacher, architecture, queries or config"):
        distill(small_teacher, p, student=SMALL, config=tiny_cfg(lr=1e-3), quiet=True, resume=True)
    extra = np.random.default_rng(0).standard_normal((10, 32)).astype(np.float32)
    with pytest.raises(InputError, match="another teacher, architecture, queries or config"):
        distill(small_teacher, p, student=SMALL, config=tiny_cfg(), queries=extra, quiet=True, resume=True)


def test_resume_of_a_finished_run_returns_it_unchanged(tmp_path, small_teacher):
    p = tmp_path / "s.pt"
    done = distill(small_teacher, p, student=SMALL, config=tiny_cfg(), quiet=True)
    before = p.read_bytes()
    again = distill(small_teacher, p, student=SMALL, config=tiny_cfg(), quiet=True, resume=True)
    assert p.read_bytes() == before and again.checkpoint.metrics == done.checkpoint.metrics


def test_export_refuses_an_unfinished_checkpoint(tmp_path, small_teacher):
    from h2l.export import export_onnx

    p = tmp_path / "s.pt"
    distill(small_teacher, p, student=SMALL, config=tiny_cfg(), quiet=True, stop_after=10)
    with pytest.raises(InputError, match="unfinished \\(interrupted\\) distillation") as exc:
        export_onnx(small_teacher, tmp_path / "b", student=p)
    assert "--resume" in exc.value.one_line() and not (tmp_path / "b").exists()


def test_selection_uses_sampled_validation_and_reports_heldout(tmp_path, small_teacher):
    res = distill(small_teacher, tmp_path / "s.pt", student=SMALL, config=tiny_cfg(), quiet=True)
    m = res.checkpoint.metrics
    h = res.checkpoint.history
    assert m["selection"] == "val_sampled_cosine"
    assert m["best_step"] == h["step"][int(np.argmax(h["val_sampled_cosine"]))]
    assert set(m["final"]) == {"sampled", "heldout"}


def test_checkpoint_is_self_describing_and_writes_report(tmp_path, small_teacher):
    distill(small_teacher, tmp_path / "s.pt", student=SMALL, config=tiny_cfg(), quiet=True)
    ck = load_checkpoint(tmp_path / "s.pt")
    assert ck.config == SMALL and ck.teacher_sha256 == small_teacher.fingerprint()
    assert ck.train_config["steps"] == 40 and "heldout" in ck.metrics["final"]
    assert (tmp_path / "s.pt.report.json").is_file()
    assert (tmp_path / "s.pt.report.png").read_bytes()[:4] == b"\x89PNG"


def test_distill_from_the_teacher_alone(tmp_path):
    t = synthetic_teacher(8, 32, seed=4)
    assert t.queries is None
    res = distill(t, tmp_path / "s.pt", student=SMALL, config=tiny_cfg(), quiet=True)
    assert set(res.checkpoint.metrics["final"]) == {"sampled"}


@pytest.mark.slow
def test_distill_export_verify_end_to_end(tmp_path, runner):
    """CLI: a student good enough to pass the 0.98 gate, exported and verified; an undertrained one fails."""
    from h2l.importers.npz import save_npz

    save_npz(synthetic_teacher(16, 64, queries_per_head=4, heldout_per_head=2, seed=7), tmp_path / "t.npz")
    r = runner.invoke(app, ["distill", str(tmp_path / "t.npz"), "--out", str(tmp_path / "s.pt"), "--steps", "300",
                            "--batch-size", "512", "--ff-dim", "128", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "held-out real queries (never trained on" in r.stdout
    r = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--student", str(tmp_path / "s.pt"),
                            "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu", "--min-cosine", "0.98"])
    assert r.exit_code == 0, r.output
    assert "vs_teacher:golden" in r.stdout and "vs_teacher:sampled" in r.stdout
    # one step: far from the teacher; export with the gate off, then verify must fail with the parity code
    r = runner.invoke(app, ["distill", str(tmp_path / "t.npz"), "--out", str(tmp_path / "bad.pt"), "--steps", "1",
                            "--batch-size", "32", "--ff-dim", "32", "--quiet"])
    assert r.exit_code == 0
    r = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--student", str(tmp_path / "bad.pt"),
                            "--out", str(tmp_path / "bad")])
    assert r.exit_code == 6 and "vs_teacher" in r.stderr and not (tmp_path / "bad").exists()
    r = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--student", str(tmp_path / "bad.pt"),
                            "--out", str(tmp_path / "bad"), "--min-cosine", "-1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", str(tmp_path / "bad"), "--provider", "cpu"])
    assert r.exit_code == 6
    assert "student/cpu vs_teacher:sampled = 0." in r.stderr and "(gate 0.98)" in r.stderr


@pytest.mark.slow
def test_int8_export_ships_through_the_gate(tmp_path, runner):
    """--quantize int8: dynamic int8 weights, output projection float, verified like any student."""
    import json

    from h2l.importers.npz import save_npz

    save_npz(synthetic_teacher(12, 64, queries_per_head=3, heldout_per_head=1, seed=8), tmp_path / "t.npz")
    assert runner.invoke(app, ["distill", str(tmp_path / "t.npz"), "--out", str(tmp_path / "s.pt"), "--steps", "300",
                               "--batch-size", "512", "--ff-dim", "128", "--quiet"]).exit_code == 0
    r = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--student", str(tmp_path / "s.pt"),
                            "--out", str(tmp_path / "b"), "--quantize", "int8"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())["models"]["student"]
    assert m["quantization"] == "int8" and m["source_check"]["int8_vs_float_min_cosine"] > 0.99
    import onnx

    nodes = {n.name: n.op_type for n in onnx.load(str(tmp_path / "b" / "student.onnx")).graph.node}
    assert "MatMulInteger" in nodes.values() and nodes["output_proj_MatMul"] == "MatMul"  # output stays float
    assert runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu"]).exit_code == 0
    r = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--out", str(tmp_path / "c"),
                            "--quantize", "int8"])
    assert r.exit_code == 3 and "applies to a folded student" in r.stderr


def test_sampler_neighbour_mixes_stay_local():
    """neighbours=1: every mix is built from a centroid and its nearest neighbours."""
    from h2l.distill.sampler import _nearest

    t = synthetic_teacher(40, 32, seed=6)
    s = QueryStream(t, None, SamplerMix(neighbours=1.0, max_centroids=2, noise_min=0.0, noise_max=0.0),
                    torch.Generator().manual_seed(0))
    near = _nearest(torch.nn.functional.normalize(torch.from_numpy(t.centroids), dim=1), 8)
    assert near.shape == (40, 8) and not (near == torch.arange(40)[:, None]).any()
    q = torch.nn.functional.normalize(s.sample(256), dim=1)
    c = torch.nn.functional.normalize(torch.from_numpy(t.centroids), dim=1)
    top2 = (q @ c.T).topk(2, dim=1).indices
    # the two nearest centroids of a two-centroid mix are (almost always) neighbours of each other
    local = [(int(b) in near[int(a)]) or (int(a) in near[int(b)]) for a, b in top2]
    assert np.mean(local) > 0.9
