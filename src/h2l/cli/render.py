"""Human output of the CLI (tables and summaries); ``--json`` output bypasses this module."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

# wide when piped (CI logs, docs): rich would otherwise squeeze tables to 80 columns
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def print_summary(summary: dict) -> None:
    for provider, srcs in summary.items():
        for src, fid in srcs.items():
            if src == "routed":  # routed vs flat teacher, per query source (h2l.verify.routed_checks)
                for rsrc, r in fid.items():
                    mass = next(k for k in r if k.startswith("median_"))
                    out.print(f"  routed vs flat teacher [{provider}, {rsrc}]: mean cos {r['mean_cosine']:.7f}, "
                              f"min {r['min_cosine']:.7f}, {mass.replace('_', ' ')} {r[mass]:.3g} "
                              f"(K = {r['candidates']})", markup=False)
                continue
            if src == "recall_at_1":
                out.print(f"  recall@1 [{provider}] " + ", ".join(f"{k} {v:.1%}" for k, v in fid.items()), markup=False)
                continue
            if src == "encoder":
                out.print(f"  encoder [{provider}] vs golden: max abs {fid['golden_max_abs']:.2e} (one text per call), "
                          f"{fid['padded_batch_max_abs']:.2e} (padded batch)", markup=False)
                continue
            out.print(f"  student vs teacher [{provider}, {src}]: mean cos {fid['mean_cosine']:.5f}, "
                      f"min {fid['min_cosine']:.5f}, top-1 agreement {fid['top1_agreement']:.1%}", markup=False)


def print_sweep_tables(report: dict) -> None:
    """One table per batch size: flat vs routed vs student latency, and fidelity vs the flat teacher."""
    from ..bench.sweep_fidelity import sweep_table

    for batch in sorted({r["batch"] for r in report["results"]}):
        cols, rows = sweep_table(report, batch)
        table = Table(title=f"sweep, batch {batch}, τ = {report.get('temperature')}: µs per query (p50), "
                            "cosine vs the flat teacher")
        for c in cols:
            table.add_column(c, justify="right")
        for r in rows:
            table.add_row(*r)
        out.print(table)


def print_routing_profile(p: dict) -> None:
    """Effective heads and candidates needed (h2l.model.routing_profile), then the verdict in plain words."""
    eff = p["effective_heads"]
    out.print(f"effective heads  median {eff['median']:.3g}, p95 {eff['p95']:.3g} (exp entropy of the routing "
              f"weights, {p['queries']['n']} near-centroid queries; 1 = one head, N = {p['n_heads']} = uniform)",
              markup=False)
    for eps, need in p["candidates_needed"].items():
        bm, ck = need["best_m"], need["certified_k"]
        out.print(f"mass ≤ {eps:<6}    best-M median {bm['median']:.0f} p95 {bm['p95']:.0f}; int8 screen certifies "
                  f"it with median {ck['median']:.0f} p95 {ck['p95']:.0f} candidates", markup=False)
    out.print(p["verdict"], markup=False)


def print_report(report) -> None:
    table = Table(title="h2l verify", show_lines=False)
    for col in ("model", "provider", "check", "value", "gate", "result"):
        table.add_column(col)
    for c in report.checks:
        higher = c.check.startswith("vs_teacher") or c.check.endswith("min_cosine")  # gates from below
        val = "" if c.value is None else (f"{c.value:.6f}" if higher or c.check.startswith("recall")
                                          else f"{c.value:.2e}")
        gate = "" if c.threshold is None else (f"≥ {c.threshold:g}" if higher else f"≤ {c.threshold:g}")
        res = "info" if c.kind == "info" else ("[green]pass[/]" if c.passed else "[red]FAIL[/]")
        table.add_row(c.model, c.provider, c.check, val, gate, res)
    out.print(table)
    for p, reason in report.skipped:
        out.print(f"skipped {p}: {reason}")
    print_summary(report.summary)
    out.print("[green]verify passed[/]" if report.passed
              else f"[red]verify failed: {len(report.failures())} check(s)[/]")


def print_bench(report: dict) -> None:
    m = report["machine"]
    out.print(f"{m['cpu']} · {m['threads']['intra_op']} thread(s) · onnxruntime {m['onnxruntime']} · "
              f"torch {m['torch']}")
    table = Table(title="median latency per call (µs); per query = p50 / batch")
    cols = (["N"] if "ns" in report else []) + ["model", "variant", "provider", "batch", "p50", "p90", "p99",
                                                  "per query", "queries/s"]
    for c in cols:
        table.add_column(c, justify="right")
    for r in report["results"]:
        table.add_row(*([str(r["n"])] if "ns" in report else []), r["model"], r["variant"], r["provider"],
                      str(r["batch"]), f"{r['p50_us']:.1f}", f"{r['p90_us']:.1f}", f"{r['p99_us']:.1f}",
                      f"{r['per_query_p50_us']:.2f}", f"{r['throughput_qps']:.0f}")
    out.print(table)
    if "crossover" in report:
        for k, v in report["crossover"].items():
            out.print(f"crossover {k}: " + (f"N ≈ {v['n']}" if v.get("n") else v.get("note", "none")))
    if "floor" in report:
        f = report["floor"]
        out.print(f"floor: memory bandwidth {f['memory_bandwidth_gbs']} GB/s, float32 GEMM {f['gemm_gflops']} GFLOP/s")
    if not report["cuda"]["usable"]:
        out.print(f"cuda: skipped ({report['cuda']['reason']})")


def print_demo_summary(s: dict) -> None:
    out.print("")
    out.print("[bold]summary[/]")
    labels = {"heldout": "held-out real queries (never trained on or used to choose)",
              "sampled": "sampled validation queries (used to choose the checkpoint)"}
    for k, v in sorted(s["fidelity_heldout"].items()):
        out.print(f"  student vs teacher, {v['n']} {labels.get(k, k)}: mean cos {v['mean_cosine']:.5f}, "
                  f"min {v['min_cosine']:.5f}, top-1 agreement {v['top1_agreement']:.1%}")
    lat = {(r["model"], r["variant"], r["batch"]): r for r in s["latency_us"]}
    for key, label in ((("teacher", "numpy", 1), "teacher numpy"), (("teacher", "ort", 1), "teacher onnxruntime"),
                       (("student", "ort_folded", 1), "student onnxruntime (folded)"),
                       (("student", "torch_eager", 1), "student torch eager")):
        if key in lat:
            b32 = lat.get((key[0], key[1], 32))
            out.print(f"  {label:30} {lat[key]['p50_us']:8.1f} µs/query"
                      + (f", {b32['per_query_us']:.1f} µs/query at batch 32" if b32 else ""))
    best = {m: min(r["p50_us"] for r in s["latency_us"] if r["model"] == m and r["batch"] == 1)
            for m in ("teacher", "student")}
    winner = "teacher" if best["teacher"] <= best["student"] else "student"
    out.print(f"  at N = {s['n_heads']} the fastest {winner} wins on this CPU ({best['teacher']:.1f} µs teacher vs "
              f"{best['student']:.1f} µs student, single query)"
              + ("; the student pays off only at large N (docs/bench.md)" if winner == "teacher" else ""))
    out.print(f"  bundle: {s['bundle']} (manifest.json, teacher.onnx, student.onnx, "
              + ("encoder.onnx, tokenizer.json, answers.jsonl, " if s.get("ask") else "") + "golden/)")
    out.print(f"  Rust:  H2L_BUNDLE={s['bundle']} ORT_DYLIB_PATH=$(h2l ort-lib) "
              "cargo run --manifest-path runtimes/rust/Cargo.toml --bin h2l-rs -- "
              f"{s['bundle']}", markup=False)
    out.print(f"  Go:    cd runtimes/go && ORT_DYLIB_PATH=$(h2l ort-lib) go run ./cmd/h2l-go {s['bundle']}",
              markup=False)
    if s.get("ask"):
        q = s["ask"][0]["text"]
        out.print(f"  ask:   h2l ask {s['bundle']} \"{q}\" --no-embedding", markup=False)
        out.print("  Rust:  ORT_DYLIB_PATH=$(h2l ort-lib) cargo run --manifest-path runtimes/rust/Cargo.toml "
                  f"--bin h2l-rs -- ask {s['bundle']} \"{q}\"", markup=False)
        out.print(f"  Go:    cd runtimes/go && ORT_DYLIB_PATH=$(h2l ort-lib) go run ./cmd/h2l-go ask {s['bundle']} "
                  f"\"{q}\"", markup=False)
