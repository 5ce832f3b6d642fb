"""Text → answer latency in Python, one short question, 1 thread: each stage and end to end.

    PYTHONPATH=src .venv/bin/python scripts/text_latency.py BUNDLE [--model teacher|student] \
        --out docs/text_latency.json

Stages: tokenize (tokenizers, truncation at the manifest's max_seq_length), encoder.onnx, the model
(teacher or student .onnx), top cluster + answer lookup, and ``Asker.ask`` end to end (what
``h2l ask`` runs per text, without process start-up and JSON printing). p50/p99 in ms, with the
encoder's share of the end-to-end median.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

QUESTION = "How do I fix a flat tyre?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--question", default=QUESTION)
    ap.add_argument("--min-time", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from h2l.ask import open_asker
    from h2l.bench.timing import machine_info, pin_threads, time_calls
    from h2l.bundle.answers import top
    from h2l.runtime.encoder import tokenize

    with pin_threads(1):
        asker = open_asker(args.bundle, args.model, threads=1)
        q = [args.question]
        toks = tokenize(asker.encoder.tokenizer, q)
        emb = asker.encoder.run_ids(toks)
        outs = asker.runner.run(emb)
        stages = {
            "tokenize": lambda: tokenize(asker.encoder.tokenizer, q),
            "encoder": lambda: asker.encoder.run_ids(toks),
            asker.model: lambda: asker.runner.run(emb),
            "top_cluster+answer": lambda: top(asker.model, outs, asker.answer_embeddings),
            "end_to_end": lambda: asker.ask(q, embedding=False),
        }
        rows = {}
        for name, fn in stages.items():
            n, p50, _, p99 = time_calls(fn, batch=1, min_time=args.min_time, max_calls=100000, warmup=20)
            rows[name] = {"calls": n, "p50_ms": round(p50 / 1e3, 4), "p99_ms": round(p99 / 1e3, 4)}
    e2e = rows["end_to_end"]["p50_ms"]
    report = {"bundle": str(args.bundle), "question": args.question, "tokens": len(toks[0].ids),
              "model": asker.model, "stages": rows, "encoder_share_of_p50": round(rows["encoder"]["p50_ms"] / e2e, 3),
              "machine": machine_info(1), "load_average": os.getloadavg()}
    print(f"{args.question!r} ({len(toks[0].ids)} tokens), model {asker.model}, 1 thread, "
          f"load average {report['load_average'][0]:.1f}")
    print("| stage | p50 (ms) | p99 (ms) | calls |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['calls']} |")
    print(f"encoder share of the end-to-end median: {report['encoder_share_of_p50']:.1%}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
