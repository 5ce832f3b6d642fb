"""One exception hierarchy for h2l.

Every error carries the exit code the CLI returns and a one-line fix, so the
CLI boundary can print ``error: <what>. fix: <how>`` and exit without a stack
trace.  Codes are part of the public contract (README, "Exit codes").
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_OUTPUT = 4
EXIT_INTEGRITY = 5
EXIT_PARITY = 6
EXIT_PROVIDER = 7
EXIT_DEPENDENCY = 8
EXIT_INTERRUPTED = 130


class H2LError(Exception):
    """Base class: a problem the user can fix, with the exit code to report."""

    exit_code = EXIT_INTERNAL
    default_fix = "report this as a bug with the command you ran"

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message.rstrip(".")
        self.fix = (fix or self.default_fix).rstrip(".")

    def one_line(self) -> str:
        """The message the CLI prints: problem and fix on one line."""
        text = f"{self.message}. fix: {self.fix}"
        return " ".join(text.split())


class UsageError(H2LError):
    """A command line that contradicts itself or lacks a required choice (exit 2, like click's own errors)."""

    exit_code = EXIT_USAGE
    default_fix = "see the command's --help"


class InputError(H2LError):
    """A teacher, query, checkpoint or Q-A file that is malformed or unsafe."""

    exit_code = EXIT_BAD_INPUT
    default_fix = "check the input file named above"


class OutputError(H2LError):
    """The output location exists (without --force) or cannot be written."""

    exit_code = EXIT_OUTPUT
    default_fix = "choose another output path or pass --force"


class IntegrityError(H2LError):
    """A bundle whose files, hashes, schema or I/O contract do not check out."""

    exit_code = EXIT_INTEGRITY
    default_fix = "re-export the bundle with `h2l export`"


class ParityError(H2LError):
    """A model that disagrees with its source or its teacher beyond the gate."""

    exit_code = EXIT_PARITY
    default_fix = "distill longer (more --steps) or re-export, then verify again"

    def __init__(self, failures: list[str], fix: str | None = None) -> None:
        self.failures = list(failures)
        super().__init__("parity failed: " + "; ".join(self.failures), fix)


class ProviderError(H2LError):
    """An execution provider was requested that cannot run here."""

    exit_code = EXIT_PROVIDER
    default_fix = "use --provider cpu, or --provider auto to skip CUDA when it is absent"


class DependencyError(H2LError):
    """An optional dependency (e.g. the embedder) is not installed."""

    exit_code = EXIT_DEPENDENCY
    default_fix = "pip install 'h2l[embed]'"
