"""The ``h2l`` command line's shared parts: the typer app, the error boundary, choice enums, the entry point.

No domain logic lives in the CLI.

Every :class:`h2l.errors.H2LError` becomes ``error: <problem>. fix: <fix>`` on
stderr and its documented exit code; Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
import json
import sys
from enum import Enum

import typer
from rich.console import Console

from ..errors import EXIT_INTERRUPTED, H2LError

app = typer.Typer(name="h2l", help="Distil multi-head LDA routing teachers into students; ship both as ONNX.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
teacher_app = typer.Typer(help="Import, build and inspect teachers.", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")
err = Console(stderr=True, highlight=False, soft_wrap=True)


def handled(fn):
    """Map domain errors to one line and an exit code at the CLI boundary."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except H2LError as exc:
            err.print(f"error: {exc.one_line()}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("error: interrupted; no partial output was written. fix: run the command again", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    return wrapper


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


class Format(str, Enum):
    onnx = "onnx"
    npy = "npy"


class FederatedRouting(str, Enum):
    centroid = "centroid"
    query = "query"


class Quantize(str, Enum):
    none = "none"
    int8 = "int8"


class Router(str, Enum):
    screen = "screen"
    ivf = "ivf"


class AskModel(str, Enum):
    teacher = "teacher"
    student = "student"
    routed = "routed"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class Provider(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"
    all = "all"


def main() -> None:  # pragma: no cover - console script entry
    import logging

    # the application, not the library, decides logging: errors only (onnxruntime's quantizer advises on WARNING)
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    app()
