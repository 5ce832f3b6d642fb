"""Measurement only (not shipped): a dynamic-int8 encoder vs the float one on the demo questions.

    PYTHONPATH=src .venv/bin/python scripts/encoder_int8.py artifacts/demo/bundle artifacts/demo/teacher.npz

Prints int8-vs-float cosine, the teacher's routing Recall@1 (all 160 demo questions and the 40 held out)
and plain-cosine Recall@1 with each encoder, and 1-thread encoder latency for one 10-token question.
"""
import json
import os
import sys

import numpy as np
from onnxruntime.quantization import QuantType, quantize_dynamic

from h2l.bench.timing import time_calls
from h2l.importers.npz import load_npz
from h2l.runtime.encoder import make_text_encoder, tokenize

B, TEACHER = sys.argv[1], sys.argv[2]  # a bundle with an encoder, and its teacher .npz
quantize_dynamic(f"{B}/encoder.onnx", "/tmp/h2l_encoder_int8.onnx", weight_type=QuantType.QInt8, per_channel=False,
                 extra_options={"MatMulConstBOnly": True})
print("int8 bytes", os.path.getsize("/tmp/h2l_encoder_int8.onnx"))
f = make_text_encoder(f"{B}/tokenizer.json", f"{B}/encoder.onnx", 256, threads=1)
q = make_text_encoder(f"{B}/tokenizer.json", "/tmp/h2l_encoder_int8.onnx", 256, threads=1)
doc = json.load(open("src/h2l/data/demo/bike_qa.json"))
t = load_npz(TEACHER)
texts, labels = [], []
for c in doc["clusters"]:
    for g in c["queries"].values():
        for x in g:
            texts.append(x)
            labels.append(t.cluster_ids.index(c["id"]))
labels = np.array(labels)
ef, _, _ = f.embed(texts)
eq, _, _ = q.embed(texts)
cos = (ef*eq).sum(1)/np.linalg.norm(eq,axis=1)
print("int8 vs float cosine min %.5f mean %.5f" % (cos.min(), cos.mean()))
held = np.zeros(len(texts), bool)
# teacher's held-out rows: match embeddings to teacher.queries.heldout
for h in t.queries.heldout:
    held |= np.abs(ef - h).max(1) < 1e-4
for name, e in (("float", ef), ("int8", eq)):
    _, w = t.project(e)
    r_all = (w.argmax(1) == labels).mean()
    r_h = (w.argmax(1)[held] == labels[held]).mean()
    a = t.answers/np.linalg.norm(t.answers,axis=1,keepdims=True)
    r_plain_h = ((e[held]@a.T).argmax(1) == labels[held]).mean()
    print(f"{name}: routing Recall@1 all {len(texts)} questions {r_all:.3f}, held-out {held.sum()} {r_h:.3f}; "
          f"plain cosine held-out {r_plain_h:.3f}")
tk = tokenize(f.tokenizer, ["How do I fix a flat tyre?"])
for name, e in (("float", f), ("int8", q)):
    n, p50, _, p99 = time_calls(lambda e=e: e.run_ids(tk), batch=1, min_time=3)
    print(f"{name} encoder p50 {p50/1e3:.2f} ms p99 {p99/1e3:.2f} ms ({n} calls)")
