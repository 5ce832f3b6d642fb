"""h2l: distil multi-head LDA routing teachers into small students and ship both as ONNX.

The public API (documented in the README, "Python API"), loaded on first use so
that ``import h2l`` stays light (no torch, no onnxruntime):

    h2l.Teacher, h2l.Bundle (``Bundle(path)``, ``.dim``, ``.project(q)``, ``.embed(texts)``, ``.ask(texts)``),
    h2l.load_teacher, h2l.save_teacher, h2l.distill_teacher, h2l.export_bundle, h2l.verify_bundle
"""

import importlib

__version__ = "0.1.0"

__all__ = ["Teacher", "Bundle", "load_teacher", "save_teacher", "distill_teacher", "export_bundle",
           "verify_bundle", "__version__"]


_HOME = {"Teacher": "h2l.model.teacher", "Bundle": "h2l.bundle.service"}  # the rest live in h2l.api


def __getattr__(name: str):
    if name in __all__:
        value = getattr(importlib.import_module(_HOME.get(name, "h2l.api")), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'h2l' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
