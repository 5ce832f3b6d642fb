"""Comma-separated list options (``--n 16,64``, ``--mix 0.5,0.25,0.25``, ``--provider cpu,torch``), and the
hidden old spellings of renamed options (``--d`` for ``--embed-dim``), which keep working.

typer 0.29 vendors its own click and takes a converter through ``parser=``;
these converters play click's ParamType role.  A bad value raises
``typer.BadParameter``, which the CLI reports as a usage error (exit 2) naming
the option, before any work starts.  (``python -O`` strips ``assert``, so no
validation here uses it.)
"""

from __future__ import annotations

import math
from typing import cast

import typer

from ..errors import UsageError


def given(ctx: typer.Context, *names: str) -> list[str]:
    """The options among ``names`` (parameter names) set on the command line, as spelt there (``--min-cosine``).

    Asks click where each value came from, so an option given with its default value counts as given."""
    out = []
    for p in ctx.command.params:
        src = ctx.get_parameter_source(p.name) if p.name in names and p.name else None
        if src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP"):
            out.append(max(p.opts, key=len))
    return out


def _spelling(ctx: typer.Context, name: str) -> str:
    return next(max(p.opts, key=len) for p in ctx.command.params if p.name == name)


def renamed(ctx: typer.Context, name: str, value, old_name: str, old_value):
    """The value of option ``name``, or of its hidden old spelling ``old_name`` when that was used instead.

    The old option defaults to None; setting both is a usage error (one would silently win)."""
    if old_value is None:
        return value
    if given(ctx, name):
        new, old = _spelling(ctx, name), _spelling(ctx, old_name)
        raise UsageError(f"{new} and {old} are one option ({old} is its old spelling) but both were given",
                         f"pass {new} only")
    return old_value


def positional(value, old_value, what: str, old: str, example: str):
    """A positional argument that may also come as the hidden option ``old`` (``--teacher``): exactly one."""
    if value is not None and old_value is not None:
        raise UsageError(f"{what} given twice: first and as {old}", f"pass it once, first: {example}")
    if value is None and old_value is None:
        raise UsageError(f"missing {what}", f"pass it first: {example}")
    return value if value is not None else old_value


def list_default(text: str) -> list:
    """A list option's default, written as on the command line (``"16,64"``, shown so in ``--help``).

    typer runs a default through ``parser=`` too, so the command receives a list; this tells mypy so.
    The value stays the string (``cast`` does nothing at run time)."""
    return cast(list, text)


class _ListParam:
    """Base: split on commas, convert each item, check the count; idempotent on an already-parsed list."""

    name = "LIST"
    example = ""

    def __init__(self, count: int | None = None) -> None:
        self.count = count

    def item(self, text: str):
        raise NotImplementedError

    def __call__(self, value):
        if isinstance(value, list):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        if not parts or any(not p for p in parts):
            self.fail(value, "has an empty item")
        out = []
        for p in parts:
            try:
                out.append(self.item(p))
            except ValueError as exc:
                self.fail(value, str(exc))
        if self.count is not None and len(out) != self.count:
            self.fail(value, f"has {len(out)} items, expected {self.count}")
        return out

    def fail(self, value, why: str):
        raise typer.BadParameter(f"{value!r} {why}; fix: pass e.g. {self.example}")


class PositiveInts(_ListParam):
    name, example = "INTS", "1,32"

    def item(self, text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise ValueError(f"has {text!r}, not an integer") from None
        if v < 1:
            raise ValueError(f"has {v}, expected integers ≥ 1")
        return v


class Shares(_ListParam):
    """Non-negative finite numbers with a positive sum (sampler shares)."""

    name, example = "FLOATS", "0.5,0.25,0.25"

    def item(self, text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise ValueError(f"has {text!r}, not a number") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"has {text!r}, expected finite numbers ≥ 0")
        return v

    def __call__(self, value):
        out = super().__call__(value)
        if sum(out) <= 0:
            self.fail(value, "sums to 0")
        return out


class Choices(_ListParam):
    """A set of names from a fixed vocabulary."""

    name = "NAMES"

    def __init__(self, *choices: str) -> None:
        super().__init__(None)
        self.choices = choices
        self.example = ",".join(choices[:2])

    def item(self, text: str) -> str:
        if text not in self.choices:
            raise ValueError(f"has unknown {text!r}, expected any of {', '.join(self.choices)}")
        return text
