"""Data-parallel distillation on real torch.distributed (gloo, CPU): step equivalence, the torchrun CLI path,
a killed rank, resume under DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from h2l.distill.checkpoint import load_checkpoint
from h2l.distill.ddp import DistContext, gather_states, rank_seed
from h2l.distill.sampler import QueryStream, SamplerMix
from h2l.distill.train import TrainConfig, new_student, train_step
from h2l.errors import InputError
from h2l.model.student import StudentConfig
from h2l.model.synthetic import synthetic_teacher

REPO = Path(__file__).resolve().parents[2]
STUDENT = StudentConfig(32, layers=2, ff_dim=48)
CFG = TrainConfig(steps=10, lr=1e-2, seed=3)
BATCH = 64
STEPS = 3


def teacher():
    return synthetic_teacher(12, 32, queries_per_head=4, heldout_per_head=2, seed=3)


def _rank_batches(rank: int, steps: int, per_rank: int):
    t = teacher()
    s = QueryStream(t, t.queries.train, SamplerMix(), torch.Generator().manual_seed(rank_seed(CFG.seed, rank)))
    return [s.batch(per_rank) for _ in range(steps)]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.nn.parallel import DistributedDataParallel

    model = new_student(STUDENT, teacher(), CFG.seed)
    ddp = DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=CFG.lr, weight_decay=CFG.weight_decay)
    grads = []
    for step, (q, y) in enumerate(_rank_batches(rank, STEPS, BATCH // world)):
        train_step(ddp, opt, q, y, step, CFG)
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    if rank == 0:
        torch.save({"params": {k: v.detach().clone() for k, v in model.state_dict().items()}, "grads": grads}, out)
    dist.barrier()  # as h2l does: no rank tears gloo down while another still works
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_step_equals_one_rank_step_on_the_joined_batch(tmp_path):
    """2 ranks × B/2 (each its own shard) == 1 process on the concatenated batch B, gradients and weights."""
    out = tmp_path / "ddp.pt"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    got = torch.load(out, weights_only=True)
    model = new_student(STUDENT, teacher(), CFG.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=CFG.lr, weight_decay=CFG.weight_decay)
    shards = [_rank_batches(r, STEPS, BATCH // 2) for r in range(2)]
    for step in range(STEPS):
        q = torch.cat([shards[0][step][0], shards[1][step][0]])
        y = torch.cat([shards[0][step][1], shards[1][step][1]])
        train_step(model, opt, q, y, step, CFG)
        for k, p in model.named_parameters():
            assert torch.allclose(p.grad, got["grads"][step][k], atol=1e-6, rtol=0), (step, k)
    for k, v in model.state_dict().items():
        assert torch.allclose(v, got["params"][k], atol=1e-6, rtol=0), k
    # and the shards really differ (each rank draws its own part of the stream)
    assert not torch.allclose(shards[0][0][0], shards[1][0][0])


def _gen_state(rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(rank_seed(11, rank))
    torch.randn(5 + rank, generator=g)  # advance each rank differently
    return g.get_state()


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)

    def no_pickles(*a, **k):
        raise AssertionError("all_gather_object unpickles peer data")
    dist.all_gather_object = no_pickles  # type: ignore[assignment]
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ctx = DistContext(rank, world, 0, True, False)
    states = gather_states(ctx, _gen_state(rank))
    bad = _gen_state(rank)[: None if rank == 0 else -8]  # rank 1 sends a shorter state
    try:
        gather_states(ctx, bad)
        error = ""
    except InputError as exc:
        error = exc.one_line()
    torch.save({"states": states, "error": error}, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def test_gather_states_is_a_tensor_all_gather_and_refuses_other_sizes(tmp_path):
    """Real gloo, 3 ranks: every rank gets every rank's generator state in rank order without unpickling
    (all_gather_object is patched to fail), and a rank whose state has another size is refused on all ranks."""
    world = 3
    mp.start_processes(_gather_worker, args=(world, _free_port(), str(tmp_path / "g")), nprocs=world, join=True,
                       start_method="spawn")
    want = [_gen_state(r) for r in range(world)]
    assert len({bytes(w.numpy()) for w in want}) == world  # the ranks' states really differ
    for r in range(world):
        got = torch.load(tmp_path / f"g.{r}", weights_only=True)
        assert len(got["states"]) == world and all(torch.equal(a, b) for a, b in zip(got["states"], want, strict=True))
        assert all(s.dtype == torch.uint8 and s.device.type == "cpu" for s in got["states"])
        n = want[0].numel()
        assert f"differ in size across ranks ([{n}, {n - 8}, {n - 8}] bytes" in got["error"], got["error"]


# ------------------------------------------------------------------ the CLI under torchrun

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
ARGS = ["--steps", "300", "--batch-size", "256", "--eval-every", "20", "--ff-dim", "128", "--layers", "2",
        "--lr", "1e-2", "--patience", "100", "--quiet"]
GATE = 0.98


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "H2L_DIST_TIMEOUT": "60"}


def _torchrun(target: list[str], npz: Path, out: Path, *extra: str, timeout: int = 300):
    return subprocess.run([*TORCHRUN, *target, "distill", str(npz), "--out", str(out), *ARGS, *extra],
                          capture_output=True, text=True, env=_env(), timeout=timeout, cwd=REPO)


@pytest.fixture
def npz(tmp_path):
    from h2l.importers.npz import save_npz

    p = tmp_path / "t.npz"
    save_npz(teacher(), p)
    return p


def test_torchrun_two_processes_reach_the_gate_of_one_kill_and_resume(tmp_path, npz):
    """CLI path: a 2-process gloo run reaches the held-out gate one process reaches; a killed rank ends the run
    with an error, the last checkpoint survives and loads with weights_only, and --resume under torchrun ends
    exactly where the uninterrupted 2-process run ended."""
    one = subprocess.run([sys.executable, "-m", "h2l", "distill", str(npz), "--out", str(tmp_path / "one.pt"),
                          *ARGS], capture_output=True, text=True, env=_env(), timeout=300, cwd=REPO)
    assert one.returncode == 0, one.stderr
    two = _torchrun(["-m", "h2l"], npz, tmp_path / "two.pt")
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("wrote ") == 1  # rank 0 alone reports and writes
    m1, m2 = (load_checkpoint(tmp_path / f"{n}.pt").metrics["final"] for n in ("one", "two"))
    for m in (m1, m2):
        assert m["heldout"]["mean_cosine"] >= GATE and m["sampled"]["mean_cosine"] >= GATE
    assert abs(m1["heldout"]["mean_cosine"] - m2["heldout"]["mean_cosine"]) < 0.01
    rep = json.loads((tmp_path / "two.pt.report.json").read_text())
    assert rep["world_size"] == 2
    raw = torch.load(tmp_path / "two.pt", weights_only=True)
    assert len(raw["resume"]["generators"]) == 2

    # rank 1 dies (SIGKILL) at step 50: after the checkpoint of step 40
    killer = tmp_path / "kill_rank1.py"
    killer.write_text(
        "import os, signal, sys\n"
        "import h2l.distill.train as tr\n"
        "real = tr.train_step\n"
        "def step(model, opt, q, t, i, cfg):\n"
        "    if os.environ['RANK'] == '1' and i == 50:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(model, opt, q, t, i, cfg)\n"
        "tr.train_step = step\n"
        "from h2l.cli import main\n"
        "sys.argv[0] = 'h2l'\n"
        "main()\n")
    killed = _torchrun([str(killer)], npz, tmp_path / "b.pt")
    assert killed.returncode != 0
    assert "Signals.SIGKILL" in killed.stderr or "exitcode  : -9" in killed.stderr, killed.stderr[-2000:]
    ck = load_checkpoint(tmp_path / "b.pt")
    assert not ck.complete and ck.metrics["steps_run"] == 40
    torch.load(tmp_path / "b.pt", weights_only=True)
    # one process cannot resume a 2-rank checkpoint: the shards would not continue
    r = subprocess.run([sys.executable, "-m", "h2l", "distill", str(npz), "--out", str(tmp_path / "b.pt"), *ARGS,
                        "--resume"], capture_output=True, text=True, env=_env(), timeout=300, cwd=REPO)
    assert r.returncode == 3 and "written by a run on 2 rank(s), this one has 1" in r.stderr
    resumed = _torchrun(["-m", "h2l"], npz, tmp_path / "b.pt", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    done = load_checkpoint(tmp_path / "b.pt")
    assert done.complete and done.metrics["final"] == m2
    assert done.history == load_checkpoint(tmp_path / "two.pt").history
