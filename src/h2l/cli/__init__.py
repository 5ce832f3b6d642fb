"""Layer 9: the thin typer layer, one module per command group, and the one place that renders (``render``).

Importing the command modules registers their commands on :data:`app`, in the order ``h2l --help`` lists them.
"""

# registration order is the order of ``h2l --help``, so the import order is not sorted:
# isort: off
from . import teacher_commands, distill_command, bundle_commands, serve_commands  # noqa: F401
# isort: on
from .app import app, main

__all__ = ["app", "main"]
