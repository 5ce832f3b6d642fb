"""Retrieval quality of teachers built from the shared UnifyWeaver Q-A data (issue 4).

    .venv/bin/python scripts/retrieval.py --qa ../shared/data/unifyweaver-qa --out docs/retrieval.json

Recall@1 and MRR of the true cluster on held-out queries (2 per cluster) for plain cosine, the
multi-head projection and the routing weights, at τ = 0.1 and τ = 1.0, over 5 held-out splits (seeds 0–4).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from h2l.importers.embed import embed
from h2l.importers.qa import build_teacher, parse_qa_files, retrieval_quality


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qa", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    clusters = parse_qa_files(sorted(a.qa.glob("qa_pairs_v*.json")))
    texts = sorted({t for c in clusters for _, t in c.queries} | {t for c in clusters for t in c.answers})
    cache = dict(zip(texts, embed(texts), strict=True))
    fn = lambda ts: np.stack([cache[t] for t in ts])  # noqa: E731 - embed once, split five ways
    rows = {}
    for tau in (0.1, 1.0):
        per_seed = []
        for seed in range(5):
            t = build_teacher(clusters, fn, temperature=tau, holdout_per_cluster=2, seed=seed)
            per_seed.append(retrieval_quality(t, t.queries.heldout, t.queries.heldout_labels))
        rows[str(tau)] = {m: {k: [round(r[m][k], 4) for r in per_seed] for k in ("recall_at_1", "mrr")}
                          for m in per_seed[0]}
    print("| τ | method | Recall@1 per seed (0–4) | mean | MRR mean |\n|---|---|---|---|---|")
    for tau, methods in rows.items():
        for m, v in methods.items():
            print(f"| {tau} | {m} | {', '.join(f'{x:.1%}' for x in v['recall_at_1'])} | "
                  f"{np.mean(v['recall_at_1']):.1%} | {np.mean(v['mrr']):.3f} |")
    if a.out:
        a.out.write_text(json.dumps({"heldout_per_cluster": 2, "seeds": [0, 1, 2, 3, 4], "results": rows},
                                    indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
