"""What verify returns: one :class:`Check` per model × provider × check, a :class:`VerifyReport`, and the
one place a failed report becomes an exception (every failure listed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import IntegrityError, ParityError


@dataclass(frozen=True)
class Check:
    model: str
    provider: str
    check: str
    passed: bool
    kind: str  # "integrity", "parity" or "info"
    value: float | None = None
    threshold: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class VerifyReport:
    checks: tuple[Check, ...]
    providers: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    min_cosine: float = 0.98
    summary: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "provider": ",".join(self.providers), "min_cosine": self.min_cosine,
                "skipped": [{"provider": p, "reason": r} for p, r in self.skipped],
                "summary": self.summary, "checks": [asdict(c) for c in self.checks]}


def raise_for_failures(report: VerifyReport) -> None:
    """Raise once, listing every failure: IntegrityError if any contract failed, else ParityError."""
    failed = report.failures()
    if not failed:
        return
    lines = [f"{c.model}/{c.provider} {c.check}" + (f" = {c.value:.6g} (gate {c.threshold:g})"
                                                     if c.value is not None and c.threshold is not None else "")
             + (f" [{c.detail}]" if c.detail and c.kind == "integrity" else "") for c in failed]
    if any(c.kind == "integrity" for c in failed):
        raise IntegrityError("bundle contract check failed: " + "; ".join(lines), "re-export the bundle")
    gate_fail = any(c.check.startswith("vs_teacher") for c in failed)
    raise ParityError(lines, "distill longer (more --steps) and re-export" if gate_fail else
                      "re-export the bundle; if it persists, report a bug")
