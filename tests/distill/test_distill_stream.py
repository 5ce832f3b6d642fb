"""The on-device stream: distinct draws without a batch × N matrix, same distribution as the old CPU sampler,
seeding, precision flags, recipe defaults."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from h2l.cli import app
from h2l.distill.sampler import QueryStream, SamplerMix, distinct_indices
from h2l.distill.train import PrecisionError, TrainConfig, distill
from h2l.model.student import StudentConfig
from h2l.model.synthetic import synthetic_teacher


def reference_sample(stream: QueryStream, batch: int, gen: torch.Generator):
    """The sampler as it was at b3c4e11 (CPU only): k distinct centroids by top-k of a batch × N uniform matrix."""
    mix = stream.mix
    kinds = torch.multinomial(stream.weights, batch, replacement=True, generator=gen)
    n, d = stream.centroids.shape
    k = min(mix.max_centroids, n)
    idx = torch.rand(batch, n, generator=gen).topk(k, dim=1).indices
    counts = torch.randint(1, k + 1, (batch,), generator=gen)
    w = -torch.log(torch.rand(batch, k, generator=gen).clamp_min(1e-12))
    w = w * (torch.arange(k)[None, :] < counts[:, None])
    base = torch.einsum("bk,bkd->bd", w / w.sum(dim=1, keepdim=True), stream.centroids[idx])
    if stream.users is not None:
        m = len(stream.users)
        i = torch.randint(0, m, (batch,), generator=gen)
        j = torch.randint(0, m, (batch,), generator=gen)
        a = torch.rand(batch, 1, generator=gen)
        base = torch.where((kinds == 1)[:, None], stream.users[i], base)
        base = torch.where((kinds == 2)[:, None], a * stream.users[i] + (1 - a) * stream.users[j], base)
    base = F.normalize(base, dim=1)
    white = torch.randn(batch, d, generator=gen)
    shaped = white @ stream.factor_t
    use = torch.rand(batch, 1, generator=gen) < mix.shaped_noise
    noise = F.normalize(torch.where(use, shaped, white), dim=1)
    scale = mix.noise_min + (mix.noise_max - mix.noise_min) * torch.rand(batch, 1, generator=gen)
    return base + noise * scale, kinds


def test_distinct_indices_are_distinct_and_uniform():
    g = torch.Generator().manual_seed(0)
    x = distinct_indices(5, 3, 60000, g)
    assert x.shape == (60000, 3) and x.min() >= 0 and x.max() < 5
    assert ((x[:, 0] != x[:, 1]) & (x[:, 0] != x[:, 2]) & (x[:, 1] != x[:, 2])).all()
    codes = (x[:, 0] * 25 + x[:, 1] * 5 + x[:, 2]).numpy()
    counts = np.bincount(codes, minlength=125)
    used = counts[counts > 0]
    assert len(used) == 60  # every ordered 3-subset of 5, nothing else
    chi2 = ((used - 1000) ** 2 / 1000).sum()
    assert chi2 < 110  # 59 degrees of freedom: p ≈ 1e-4
    full = distinct_indices(4, 4, 100, g)  # k = n: a permutation per row
    assert (full.sort(dim=1).values == torch.arange(4)).all()


def test_distinct_indices_cost_does_not_build_batch_by_n(monkeypatch):
    """The draw never allocates anything of N columns: N = 10⁹ works in a blink."""
    x = distinct_indices(10**9, 3, 1000, torch.Generator().manual_seed(1))
    assert x.max() < 10**9 and (x[:, 0] != x[:, 1]).all()


@pytest.mark.parametrize("users", [True, False])
def test_stream_matches_the_old_cpu_sampler_in_distribution(users):
    t = synthetic_teacher(64, 32, queries_per_head=3, heldout_per_head=1, seed=5)
    uq = t.queries.train if users else None
    new = QueryStream(t, uq, SamplerMix(), torch.Generator().manual_seed(0))
    q, kinds = new.sample_with_kinds(20000)
    r, rkinds = reference_sample(new, 20000, torch.Generator().manual_seed(1))
    want = (new.weights / new.weights.sum()).numpy()
    for k in (kinds, rkinds):  # mix shares within 4 binomial standard errors
        share = np.bincount(k.numpy(), minlength=3) / len(k)
        assert np.abs(share - want).max() < 4 * np.sqrt(0.25 / len(k)), share
    c = new.centroids
    for stat in (lambda x: x.norm(dim=1),                                    # spread (noise scale)
                 lambda x: (F.normalize(x, dim=1) @ c.T).max(dim=1).values,  # closeness to the nearest centroid
                 lambda x: (F.normalize(x, dim=1) @ c.T).topk(2, dim=1).values[:, 1]):  # and to the second
        a, b = stat(q), stat(r)
        assert abs(a.mean() - b.mean()) < 0.01 and abs(a.std() - b.std()) < 0.01
    assert (q.mean(0) - r.mean(0)).abs().max() < 0.03  # first moment, per dimension
    assert (torch.cov(q.T) - torch.cov(r.T)).abs().max() < 0.03  # second moment


def test_stream_is_seeded_and_on_its_generators_device(small_teacher):
    mk = lambda seed: QueryStream(small_teacher, None, SamplerMix(), torch.Generator("cpu").manual_seed(seed))  # noqa: E731
    a, b, c = mk(4).batch(300), mk(4).batch(300), mk(5).batch(300)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    s = mk(4)
    assert s.device == torch.device("cpu") and s.teacher.keys.device == s.device


def test_same_seed_same_checkpoint_weights_and_metrics(tmp_path, small_teacher):
    cfg = TrainConfig(steps=30, batch_size=64, eval_every=10, n_val_sampled=32, seed=2)
    st = StudentConfig(32, layers=1, ff_dim=32)
    a = distill(small_teacher, tmp_path / "a.pt", student=st, config=cfg, quiet=True)
    b = distill(small_teacher, tmp_path / "b.pt", student=st, config=cfg, quiet=True)
    assert a.checkpoint.metrics == b.checkpoint.metrics
    for k, v in a.checkpoint.state_dict.items():
        assert torch.equal(v, b.checkpoint.state_dict[k])
    ra, rb = a.checkpoint.resume, b.checkpoint.resume
    for k, v in ra["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], rb["optimizer"]["state"][k]["exp_avg"])
    assert torch.equal(ra["generator"], rb["generator"])


def test_reduced_precision_is_refused_on_cpu(tmp_path, small_teacher, teacher_npz, runner):
    with pytest.raises(PrecisionError, match="only CUDA runs") as exc:
        distill(small_teacher, tmp_path / "s.pt", config=TrainConfig(steps=2, precision="bf16"), quiet=True)
    assert exc.value.exit_code == 2 and not (tmp_path / "s.pt").exists()
    r = runner.invoke(app, ["distill", str(teacher_npz), "--out", str(tmp_path / "s.pt"), "--precision", "tf32"])
    assert r.exit_code == 2 and r.stderr.startswith("error: --precision tf32 on cpu") and "fix:" in r.stderr
    r = runner.invoke(app, ["distill", str(teacher_npz), "--out", str(tmp_path / "s.pt"), "--precision", "fp8"])
    assert r.exit_code == 2 and "'fp8' is not one of 'fp32', 'tf32', 'bf16'" in r.stderr  # a CLI choice
    with pytest.raises(PrecisionError) as exc:  # the library's own check
        TrainConfig(precision="fp8").validate()
    assert exc.value.one_line() == "--precision 'fp8'. fix: use one of fp32, tf32, bf16"


def test_no_flags_take_the_recipe_for_n(tmp_path, teacher_npz, runner):
    import json

    from h2l.distill.checkpoint import load_checkpoint
    from h2l.model.sizing import recipe

    r = runner.invoke(app, ["arch", "12", "--embed-dim", "32", "--json"])
    rec = json.loads(r.stdout)["recipe"]
    assert rec == {**rec, **{k: v for k, v in recipe(12, 32).__dict__.items()}}
    r = runner.invoke(app, ["distill", str(teacher_npz), "--out", str(tmp_path / "s.pt"), "--steps", "20",
                            "--batch-size", "64", "--quiet"])
    assert r.exit_code == 0, r.output
    cfg = load_checkpoint(tmp_path / "s.pt").config
    assert (cfg.arch, cfg.layers, cfg.ff_dim, cfg.slots) == (rec["arch"], rec["layers"], rec["ff_dim"], rec["slots"])
    r = runner.invoke(app, ["arch", "4096"])
    assert "`h2l distill` with no flags picks: --arch" in r.stdout


def test_recipe_grows_with_n():
    from h2l.model.sizing import recipe

    rs = [recipe(n) for n in (64, 256, 1024, 4096, 16384)]
    assert [r.arch for r in rs] == ["lean", "lean", "memory", "memory", "memory"]
    mem = [r for r in rs if r.arch == "memory"]
    assert [r.slots for r in mem] == [256, 1024, 4096]  # M = N/4: the compressed teacher grows with N
    assert mem[-1].shipped_params > mem[0].shipped_params
    for r in rs:
        assert r.slots < r.n or r.arch != "memory"
        if r.n >= 4096:
            assert r.macs_folded < r.teacher_macs  # cheaper than the flat teacher where it matters


def test_memory_student_distils_exports_and_verifies(tmp_path, teacher_npz, runner):
    """The memory architecture ships like the others: one ONNX file, export parity, `h2l verify` passes."""
    import json

    import onnx

    r = runner.invoke(app, ["distill", str(teacher_npz), "--out", str(tmp_path / "s.pt"), "--arch", "memory",
                            "--slots", "6", "--layers", "1", "--ff-dim", "64", "--steps", "300", "--batch-size", "256",
                            "--lr", "1e-2", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(teacher_npz), "--student", str(tmp_path / "s.pt"),
                            "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["models"]["student"]["architecture"]["arch"] == "memory"
    assert sorted(p.name for p in (tmp_path / "b").glob("*.onnx")) == ["student.onnx", "teacher.onnx"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "b" / "student.onnx")).graph.node}
    assert "Softmax" in ops
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu"])
    assert r.exit_code == 0, r.output
