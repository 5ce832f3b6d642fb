"""Read a pickle without running its code: an allow-list unpickler for builtins and numpy arrays only.

A pickle is a program: ``pickle.load`` calls whatever callable the file names
(``os.system`` included).  UnifyWeaver's federated models are pickled dicts of
lists, strings, floats and numpy arrays, so :class:`AllowListUnpickler` resolves
only the few globals those need (numpy's array and dtype reconstructors, and
inert builtin types); any other global is refused *before* it is called, and
the file is reported as an input error (exit 3), never executed.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ..errors import InputError

#: (module, name) pairs a numpy array, dtype or scalar pickle needs, for numpy 1.x (numpy.core) and 2.x (numpy._core).
_NUMPY = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
_NUMPY |= {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")}
_NUMPY |= {("numpy", "ndarray"), ("numpy", "dtype")}
#: Builtins that only build inert values (no I/O, no attribute access, no evaluation, no large allocation).
_BUILTINS = {("builtins", n) for n in ("list", "dict", "tuple", "set", "frozenset", "int", "float", "complex",
                                       "bool", "str")}
_BUILTINS |= {("_codecs", "encode")}  # bytes in protocol-2 pickles: _codecs.encode(str, 'latin1')
ALLOWED = frozenset(_NUMPY | _BUILTINS)


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a callable outside the allow-list (it would have run code)."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class AllowListUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only :data:`ALLOWED` (persistent ids stay refused)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise RefusedGlobal(module, name)
        return super().find_class(module, name)


def _check_values(obj, path: Path, depth: int = 0) -> None:
    """Refuse object arrays and unexpected types anywhere in the loaded value (data only, please)."""
    if depth > 32:
        raise InputError(f"{path} nests deeper than 32 levels", "store a flat dict of lists and arrays")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufcUS":
            raise InputError(f"{path} holds a numpy array of dtype {obj.dtype}", "store numeric or str arrays only")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_values(k, path, depth + 1)
            _check_values(v, path, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_values(v, path, depth + 1)
    elif not isinstance(obj, (str, bytes, int, float, complex, bool, type(None), np.generic)):
        raise InputError(f"{path} holds a {type(obj).__name__}", "store builtins and numpy arrays only")


def load_pickle(path: str | Path, what: str = "pickle"):
    """The value a data-only pickle holds; every problem (a refused global included) is an InputError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist", "fix the path") from None
    except OSError as exc:
        raise InputError(f"{what} {path} is unreadable ({type(exc).__name__})", "fix the path") from None
    try:
        value = AllowListUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as exc:
        raise InputError(f"{what} {path} calls {exc.qualname} when unpickled: refused, not run (h2l loads only "
                         "builtins and numpy arrays from a pickle)",
                         "re-save the model as a dict of lists and numpy arrays (UnifyWeaver's trainer does)") from None
    except Exception as exc:  # a data boundary: truncated, corrupt or hostile bytes are all input errors
        raise InputError(f"{what} {path} is not a readable pickle ({type(exc).__name__}: {str(exc)[:120]})",
                         "re-create it with UnifyWeaver's trainer") from None
    _check_values(value, path)
    return value
