"""Dynamic int8 for CPU: weights of every Gemm but the output projection quantized.

Measured before h2l: quantizing the output projection too drops student-vs-
teacher cosine from 0.9997 to 0.988, so it stays float32 by default.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from .onnx_student import OUTPUT_NODE


def make_int8_student_model(folded: onnx.ModelProto, *, include_output: bool = False) -> onnx.ModelProto:
    """Return a dynamically quantized copy (QDQ-free, MatMulInteger-style) of a folded student graph.

    Pure: no logger is configured here.  quantize_dynamic advises pre-processing on the root logger; the
    ``h2l`` CLI, as the application, sets logging to errors only (see :func:`h2l.cli.commands.main`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        src.write_bytes(folded.SerializeToString())
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=False,
                         # the quantizer first splits Gemm into <name>_MatMul + <name>_Add: exclude both spellings
                         nodes_to_exclude=[] if include_output else [OUTPUT_NODE, f"{OUTPUT_NODE}_MatMul"],
                         extra_options={"MatMulConstBOnly": True})
        model = onnx.load(str(dst))
    props = {p.key: p.value for p in folded.metadata_props}
    props["h2l.quantization"] = "int8-dynamic" + ("" if include_output else f" (all Gemm but {OUTPUT_NODE})")
    onnx.helper.set_model_props(model, dict(sorted(props.items())))
    model.producer_name, model.producer_version = folded.producer_name, folded.producer_version
    return model
