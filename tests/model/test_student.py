"""ProjectionTransformer, the (H, L) rule, exact folding, reproducible student export bytes."""

import hashlib

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import rand_queries
from h2l.cli import app
from h2l.errors import InputError
from h2l.exporters.onnx_common import check, serialize
from h2l.exporters.onnx_student import make_folded_student_model, make_unfolded_student_model
from h2l.model.sizing import arch_candidates, choose_arch, param_count
from h2l.model.student import ProjectionTransformer, StudentConfig, fold, torch_forward


def test_seed_architecture_parameter_count():
    m = ProjectionTransformer(StudentConfig(384, arch="transformer"))
    n = sum(p.numel() for p in m.parameters())
    assert n == param_count(384, 2, 512) == 2_269_696  # the seed's "2.27 M"
    lean = sum(p.numel() for p in ProjectionTransformer(StudentConfig(384)).parameters())
    assert lean == param_count(384, 2, 512, "lean") == n - 2 * 2 * (384 * 384 + 384)  # Q and K gone
    mem = ProjectionTransformer(StudentConfig(384, arch="memory", slots=100))
    assert sum(p.numel() for p in mem.parameters()) == param_count(384, 2, 512, "memory", 100) == lean + 2 * 100 * 384


def test_old_checkpoint_configs_mean_the_literal_transformer():
    old = {"dim": 32, "heads": 4, "layers": 2, "ff_dim": 48, "dropout": 0.0, "normalize_input": True}
    assert StudentConfig.from_dict(old).arch == "transformer"
    assert StudentConfig.from_dict(StudentConfig(32).to_dict()).arch == "lean"
    with pytest.raises(InputError, match="--slots 0 with --arch memory"):
        StudentConfig(32, arch="memory").validate()
    with pytest.raises(InputError, match="unknown student architecture"):
        StudentConfig(32, arch="moe").validate()


@pytest.mark.parametrize("n, expect", [(216, (6, 3)), (30, (6, 2)), (64, (8, 2)), (16, (4, 2)), (256, (8, 3)),
                                       (1024, (6, 4)), (2, (2, 1)), (8, (8, 1))])
def test_arch_rule(n, expect):
    c = choose_arch(n, 384)
    assert (c.heads, c.layers) == expect
    assert c.heads ** c.layers >= n and 384 % c.heads == 0


def test_arch_uses_integer_powers_not_logs():
    # exact powers are where float logs go wrong (the seed took ceil(log 216 / log 6) = 4 layers for 6³ = 216)
    for h in (2, 3, 4, 6, 8):
        for layers in range(1, 6):
            n = h ** layers
            at = {c.heads: c for c in arch_candidates(n, 384)}[h]
            assert (at.layers, at.capacity) == (layers, n), (h, layers)
            above = {c.heads: c for c in arch_candidates(n + 1, 384)}[h]
            assert above.layers == layers + 1 and above.capacity == h ** (layers + 1), (h, layers)


def test_arch_prefers_four_on_ties_and_fewest_layers():
    cands = arch_candidates(16, 384)
    assert (cands[0].heads, cands[0].layers) == (4, 2)  # 4² = 16 exactly; 2⁴ needs more layers
    assert [c.layers for c in cands] == sorted(c.layers for c in cands)
    with pytest.raises(InputError, match="reaches N = 1000000000") as exc:
        arch_candidates(10**9, 384, max_layers=3)
    assert "fix: raise --max-heads" in exc.value.one_line()


def test_cli_arch_prints_candidates(runner):
    r = runner.invoke(app, ["arch", "216"])
    assert r.exit_code == 0 and "--heads 6 --layers 3" in r.stdout and "MACs" in r.stdout


ARCH_CASES = [("transformer", True, 0), ("transformer", False, 0), ("lean", True, 0), ("lean", False, 0),
              ("memory", True, 40)]


@pytest.mark.parametrize("arch, normalize, slots", ARCH_CASES)
def test_fold_is_exact(arch, normalize, slots):
    """Every shipped architecture: numpy fold and the folded ONNX graph equal the torch model."""
    torch.manual_seed(1)
    m = ProjectionTransformer(StudentConfig(64, heads=4, layers=3, ff_dim=96, normalize_input=normalize, arch=arch,
                                            slots=slots))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))  # move away from init so the fold has something to do
    q = rand_queries(17, 64)
    ref = torch_forward(m, q)
    f = fold(m)
    assert len(f.layers) == 3 and f.layers[0].w_attn.shape == (64, 64)
    assert np.abs(f.forward(q) - ref).max() < 1e-5
    s = ort.InferenceSession(serialize(make_folded_student_model(f, {}), "s"), providers=["CPUExecutionProvider"])
    assert np.abs(s.run(None, {"query_embedding": q})[0] - ref).max() < 1e-4


def test_folded_graph_has_no_attention_and_is_valid():
    m = ProjectionTransformer(StudentConfig(32, heads=4, layers=2, ff_dim=48))
    proto = make_folded_student_model(fold(m), {"h2l.name": "x"})
    check(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert "Softmax" not in ops and ops.count("Gemm") == 2 * 3 + 1


def test_memory_graph_reads_its_slots_with_a_softmax():
    m = ProjectionTransformer(StudentConfig(32, heads=4, layers=1, ff_dim=48, arch="memory", slots=7))
    proto = make_folded_student_model(fold(m), {})
    check(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Softmax") == 1 and {"mem_keys", "mem_values"} <= {i.name for i in proto.graph.initializer}


def test_memory_student_starts_as_the_compressed_teacher(small_teacher):
    """With M = N slots initialised from the teacher, step 0 *is* the teacher."""
    from h2l.distill.train import new_student

    n = small_teacher.n_heads
    m = new_student(StudentConfig(32, layers=1, ff_dim=16, arch="memory", slots=n), small_teacher, seed=0)
    q = rand_queries(50, 32)
    ref, _ = small_teacher.project(q)
    assert np.abs(torch_forward(m, q) - ref).max() < 1e-5
    few = new_student(StudentConfig(32, layers=1, ff_dim=16, arch="memory", slots=n // 2), small_teacher, seed=0)
    assert np.abs(torch_forward(few, q) - ref).max() > 1e-3  # half the heads: an approximation


def test_lean_student_is_the_literal_one_without_dead_q_k():
    """One token: Q/K get no gradient (zero up to float rounding in torch's fused attention backward: 1e-12 against
    V's 1e-3); the lean model computes the same function and trains the same way."""
    from h2l.distill.train import TrainConfig, train_step

    torch.manual_seed(3)
    lit = ProjectionTransformer(StudentConfig(32, heads=4, layers=2, ff_dim=48, arch="transformer"))
    lean = ProjectionTransformer(StudentConfig(32, heads=4, layers=2, ff_dim=48, arch="lean"))
    lean.lean_state_dict_from(lit)
    q = torch.from_numpy(rand_queries(64, 32))
    y = torch.from_numpy(rand_queries(64, 32, seed=1))
    assert torch.allclose(lit(q), lean(q), atol=1e-6)
    cfg = TrainConfig(steps=10, lr=1e-2)
    opts = [torch.optim.AdamW(m.parameters(), lr=cfg.lr, weight_decay=0.0) for m in (lit, lean)]
    for step in range(5):
        train_step(lit, opts[0], q, y, step, cfg)
        train_step(lean, opts[1], q, y, step, cfg)
        for layer in lit.encoder.layers:
            g = layer.self_attn.in_proj_weight.grad
            live = g[64:].abs().max()
            assert live > 0 and g[:64].abs().max() <= 1e-6 * live  # Q, K dead; V alive
    assert torch.allclose(lit(q), lean(q), atol=1e-4)
    assert not torch.allclose(lit(q), ProjectionTransformer(StudentConfig(32, 4, 2, 48))(q), atol=1e-2)


@pytest.mark.parametrize("arch, slots", [("transformer", 0), ("lean", 0), ("memory", 9)])
def test_unfolded_export_is_single_file_reproducible_and_equal(arch, slots):
    torch.manual_seed(2)
    m = ProjectionTransformer(StudentConfig(32, heads=4, layers=2, ff_dim=48, arch=arch, slots=slots)).eval()
    a = serialize(make_unfolded_student_model(m, {"h2l.name": "x"}), "s")
    b = serialize(make_unfolded_student_model(m, {"h2l.name": "x"}), "s")
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    assert b"/work" not in a and b"site-packages" not in a and b"stack_trace" not in a
    q = rand_queries(5, 32)
    s = ort.InferenceSession(a, providers=["CPUExecutionProvider"])
    assert np.abs(s.run(None, {"query_embedding": q})[0] - torch_forward(m, q)).max() < 1e-4


def test_heads_must_divide_dim():
    with pytest.raises(InputError, match="does not divide d = 30"):
        ProjectionTransformer(StudentConfig(30, heads=4))


@pytest.mark.parametrize("n", [30, 300, 5000])
def test_cli_and_api_pick_the_student_h2l_arch_shows(n, runner):
    """`h2l distill` and h2l.distill_teacher share choose_student, which follows `h2l arch N`'s recipe."""
    import json

    from h2l.model.student import choose_student

    rec = json.loads(runner.invoke(app, ["arch", str(n), "--json"]).stdout)["recipe"]
    cfg, steps = choose_student(n, 384)
    assert (cfg.arch, cfg.layers, cfg.ff_dim, steps) == (rec["arch"], rec["layers"], rec["ff_dim"], rec["steps"])
    assert cfg.slots == (rec["slots"] if rec["arch"] == "memory" else 0)
    flagged, _ = choose_student(n, 384, arch="lean", ff_dim=64)
    assert (flagged.arch, flagged.ff_dim) == ("lean", 64)
