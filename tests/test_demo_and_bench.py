"""The main job (h2l demo) and h2l bench in --quick mode: real runs, asserted on structure, not timings."""

import json

import pytest

from h2l.bench.timing import crossover, time_blocks
from h2l.cli import app


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reruns(tmp_path, runner):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--steps", "200", "--quiet"])
    assert r.exit_code == 0, r.output
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "summary", "Rust:", "Go:"):
        assert step in r.stdout
    s = json.loads((out / "demo-summary.json").read_text())
    assert s["verify"]["passed"] and (out / "bundle" / "manifest.json").is_file()
    from h2l.importers.embed import available

    if available()[0]:  # text in, answer out: two questions through Python, then the Rust and Go commands
        assert len(s["ask"]) == 2 and all(a["answer"] for a in s["ask"]) and "ask (Python" in r.stdout
        assert "h2l-rs -- ask" in r.stdout and "h2l-go ask" in r.stdout
        assert (out / "bundle" / "encoder.onnx").is_file()
    assert {(x["model"], x["variant"]) for x in s["latency_us"]} >= {("teacher", "numpy"), ("student", "ort_folded")}
    r = runner.invoke(app, ["demo", "--out", str(out), "--steps", "200", "--quiet"])  # a previous demo is replaced
    assert r.exit_code == 0, r.output


def test_demo_refuses_foreign_folder(tmp_path, runner):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "mine")])
    assert r.exit_code == 4 and "not a previous demo output" in r.stderr
    assert (tmp_path / "mine" / "keep.txt").exists()


def test_bench_bundle_quick_json(tmp_path, runner, small_teacher):
    from h2l.export import export_onnx

    export_onnx(small_teacher, tmp_path / "b")
    r = runner.invoke(app, ["bench", str(tmp_path / "b"), "--quick", "--json", "--out", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc == json.loads((tmp_path / "r.json").read_text())
    assert doc["schema"] == "h2l-bench/1" and doc["machine"]["threads"]["intra_op"] == 1
    variants = {(x["model"], x["variant"], x["batch"]) for x in doc["results"]}
    assert {("teacher", "numpy", 1), ("teacher", "ort", 32)} <= variants
    # every variant at every --batch, each from at least the 10 timed calls time_blocks promises
    assert variants == {(m, v, b) for m, v, _ in variants for b in (1, 32)}
    assert all(x["calls"] >= 10 and x["p50_us"] > 0 and x["provider"] == "cpu" for x in doc["results"])


def test_timing_percentiles_are_the_named_ones():
    """p50/p90/p99 of a known sample (numpy's linear interpolation), and the per-query and throughput
    figures derived from p50; a swapped or mislabelled percentile fails here."""
    import numpy as np

    from h2l.bench.timing import timing_of

    t = timing_of("teacher", "ort", "cpu", 4, np.arange(1.0, 101.0))
    assert (t.calls, t.p50_us, t.p90_us, t.p99_us) == (100, 50.5, 90.1, 99.01)
    assert t.per_query_p50_us == round(50.5 / 4, 3) and t.throughput_qps == round(4 / 50.5 * 1e6, 1)


def test_time_calls_measures_microseconds():
    """A call that sleeps 2 ms takes at least 2000 µs: catches a unit slip (ns, ms) in the timer."""
    import time

    from h2l.bench.timing import time_calls

    calls, p50, p90, p99 = time_calls(lambda: time.sleep(0.002), batch=1, min_time=0.0, warmup=1)
    assert calls == 10 and 2000 <= p50 < 2e6 and p50 <= p99


@pytest.mark.slow
def test_bench_sweep_quick_with_plot(tmp_path, runner):
    r = runner.invoke(app, ["bench", "--sweep", "--n", "8,32", "--embed-dim", "32", "--quick", "--json",
                            "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ns"] == [8, 32] and "batch1:ort_folded:cpu" in doc["crossover"]
    assert {x["variant"] for x in doc["results"]} >= {"numpy", "ort", "torch_eager", "ort_folded", "ort_int8"}
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_rejects_bad_arguments(runner, tmp_path):
    assert runner.invoke(app, ["bench"]).exit_code == 2
    r = runner.invoke(app, ["bench", "--sweep", "--provider", "tpu"])
    assert r.exit_code == 2 and "unknown 'tpu'" in r.stderr


def test_crossover_interpolates():
    assert crossover([10, 100], [1.0, 10.0], [5.0, 5.0])["between"] == [10, 100]
    assert crossover([10, 100], [1.0, 2.0], [5.0, 5.0])["n"] is None
    assert crossover([10, 100], [9.0, 9.0], [5.0, 5.0])["n"] == 10


def test_failed_demo_leaves_nothing(tmp_path, runner):
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--steps", "2", "--quiet"])
    assert r.exit_code == 6 and "parity failed" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_time_blocks_round_robin_with_untimed_first_calls():
    """Variants alternate in blocks; each block's first call (cache refill) is not timed; every variant gets
    at least 10 timed calls; max_calls caps each."""
    calls: list[str] = []

    def work(key, size):
        return lambda: (calls.append(key), sum(range(size)))
    fns = {"a": work("a", 20000), "b": work("b", 20000), "slow": work("slow", 60000)}
    times = time_blocks(fns, min_time=0.01, block_time=0.002, warmup=3)
    assert calls[:9] == ["a"] * 3 + ["b"] * 3 + ["slow"] * 3
    blocks = []  # [key, length] runs after the warm-up
    for key in calls[9:]:
        if blocks and blocks[-1][0] == key:
            blocks[-1][1] += 1
        else:
            blocks.append([key, 1])
    assert [k for k, _ in blocks] == ["a", "b", "slow"] * (len(blocks) // 3)  # whole rounds, in turn
    for k in fns:
        assert len(times[k]) >= 10
        assert all(n >= 2 for key, n in blocks if key == k)
        assert sum(n - 1 for key, n in blocks if key == k) == len(times[k])  # first call of a block untimed
    capped = time_blocks({"x": lambda: None, "y": lambda: None}, min_time=0.05, warmup=0, max_calls=12)
    assert [len(t) for t in capped.values()] == [12, 12]
