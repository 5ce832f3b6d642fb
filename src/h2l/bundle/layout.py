"""A bundle's file names and its one JSON writer: the leaf every other bundle module builds on.

    manifest.json        schema'd (h2l/schema/manifest.schema.json); written last
    manifest.sig         beside the manifest, never listed in it (h2l.bundle.signing)
    teacher.onnx         student.onnx, teacher_routed.onnx, encoder.onnx (optional)
    golden/*.npy         little-endian float32 inputs and expected outputs
    answers.jsonl        one {"cluster_id", "answer"} line per head (Q-A teachers only)
    reports/*.json       verification and training summaries
"""

from __future__ import annotations

import json

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # beside the manifest, never listed in it (h2l.bundle.signing)
GOLDEN_INPUTS = "golden/inputs.npy"
ANSWERS_FILE = "answers.jsonl"
GOLDEN_TEXTS = "golden/texts.json"
GOLDEN_ENCODER = "golden/encoder.query_embedding.npy"


def json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
