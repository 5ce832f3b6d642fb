"""Self-describing student checkpoints: architecture, teacher fingerprint, config, metrics, resume state.

Loaded with ``torch.load(weights_only=True)``: a checkpoint carrying a pickled
object is refused, never executed.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import write_bytes_atomic
from ..errors import InputError
from ..model.student import ProjectionTransformer, StudentConfig

FORMAT = "h2l-student"
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)  # holds tensors: a generated __eq__ would raise
class StudentCheckpoint:
    config: StudentConfig
    state_dict: dict
    teacher_sha256: str
    train_config: dict
    metrics: dict
    history: dict
    complete: bool
    resume: dict | None

    def model(self) -> ProjectionTransformer:
        m = ProjectionTransformer(self.config)
        m.load_state_dict(self.state_dict)
        return m.eval()


def save_checkpoint(path: str | Path, ckpt: StudentCheckpoint) -> None:
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": ckpt.config.to_dict(),
           "state_dict": ckpt.state_dict, "teacher_sha256": ckpt.teacher_sha256,
           "train_config": ckpt.train_config, "metrics": ckpt.metrics, "history": ckpt.history,
           "complete": ckpt.complete, "resume": ckpt.resume}
    buf = io.BytesIO()
    torch.save(doc, buf)
    write_bytes_atomic(Path(path), buf.getvalue())


def load_checkpoint(path: str | Path) -> StudentCheckpoint:
    """Read a checkpoint safely; every problem is an InputError naming the file."""
    return load_checkpoint_with_sha(path)[0]


def load_checkpoint_with_sha(path: str | Path) -> tuple[StudentCheckpoint, str]:
    """The checkpoint and the sha256 of the very bytes it was read from (one read, no race)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"student checkpoint {path} does not exist", "run `h2l distill` first or fix --student")
    data = path.read_bytes()
    return _parse(data, path), hashlib.sha256(data).hexdigest()


def _parse(data: bytes, path: Path) -> StudentCheckpoint:
    if not data.startswith(b"PK\x03\x04"):  # torch.save writes a zip; anything else is not ours to unpickle
        raise InputError(f"student checkpoint {path} is not a readable torch file (not a torch.save zip archive)",
                         "re-run `h2l distill`")
    try:
        doc = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"student checkpoint {path} holds objects outside plain tensors and numbers, refused "
                         f"(not executed): {str(exc).splitlines()[0][:120]}",
                         "load only checkpoints written by `h2l distill`") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"student checkpoint {path} is not a readable torch file ({type(exc).__name__})",
                         "re-run `h2l distill`") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{path} is not an h2l student checkpoint", "pass a file written by `h2l distill`")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(f"{path} has checkpoint format {doc['format_version']}, newer than this h2l", "upgrade h2l")
    try:
        return StudentCheckpoint(StudentConfig.from_dict(doc["config"]).validate(), doc["state_dict"],
                                 doc["teacher_sha256"], doc["train_config"], doc["metrics"], doc["history"],
                                 bool(doc["complete"]), doc.get("resume"))
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path} lacks checkpoint field {exc}", "re-run `h2l distill`") from None
