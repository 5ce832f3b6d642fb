"""The ``h2l`` command line's shared parts: the typer app, the error boundary, choice enums, the entry point.

No domain logic lives in the CLI.

Every :class:`h2l.errors.H2LError` becomes ``error: <problem>. fix: <fix>`` on
stderr and its documented exit code; Ctrl-C exits 130.  click's own usage
errors (unknown option, bad choice, missing argument) become the same one line
and exit 2, instead of typer's multi-line panel (:class:`OneLineErrors`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from enum import Enum
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from ..errors import EXIT_INTERRUPTED, H2LError, UsageError


def usage_line(exc: typer.TyperException) -> str:
    """click's message for a bad command line as ``error: <problem>. fix: <fix>``, one line.

    The list parsers (``params``) end their message with ``; fix: ...``; others get the command's --help."""
    problem, sep, fix = exc.format_message().partition("; fix: ")
    if not sep:
        ctx = getattr(exc, "ctx", None)
        fix = f"see `{ctx.command_path if ctx is not None else 'h2l'} --help`"
    problem = problem.strip()
    return "error: " + UsageError(problem[:1].lower() + problem[1:], fix).one_line()


class OneLineErrors(TyperGroup):
    """The app's click group: parse errors are one line on stderr and exit 2, as the README promises."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as exc:  # click's ClickException and its usage errors
            if type(exc).__name__ != "NoArgsIsHelpError":  # bare `h2l`: typer has printed the help already
                sys.stderr.write(usage_line(exc) + "\n")
            elif exc.format_message().strip():  # pragma: no cover - typer without rich leaves it to us
                sys.stderr.write(exc.format_message() + "\n")
            sys.exit(exc.exit_code)
        except typer.Abort:  # pragma: no cover - no command prompts; EOF on a prompt
            sys.stderr.write("error: aborted; no partial output was written. fix: run the command again\n")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # non-standalone click returns typer.Exit's code


app = typer.Typer(name="h2l", help="Distil multi-head LDA routing teachers into students; ship both as ONNX.",
                  cls=OneLineErrors, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
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


class Arch(str, Enum):
    """model.student.ARCHS (a test keeps the two equal; importing torch here would slow every command)."""

    lean = "lean"
    transformer = "transformer"
    memory = "memory"


class Precision(str, Enum):
    """distill.train.PRECISIONS."""

    fp32 = "fp32"
    tf32 = "tf32"
    bf16 = "bf16"


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
