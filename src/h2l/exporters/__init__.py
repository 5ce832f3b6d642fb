"""Exporters, one module per format.

``onnx_teacher`` and ``onnx_student`` are pure graph builders (``make_*``
returning ``onnx.ModelProto``); ``npy`` writes UnifyWeaver's vector layouts.
Writing bundles (hashes, manifest, atomic publish) lives in :mod:`h2l.bundle`.
"""

INPUT_NAME = "query_embedding"
PROJECTED_NAME = "projected_embedding"
WEIGHTS_NAME = "routing_weights"
BATCH_DIM = "batch"
