"""h2l: distil multi-head LDA routing teachers into small students and ship both as ONNX."""

__version__ = "0.1.0"
