"""Layer 9: the thin typer layer (``commands``) and the one place that renders (``render``)."""

from .commands import app, main

__all__ = ["app", "main"]
