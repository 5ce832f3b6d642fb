"""Student checkpoints on their own: round trip, the sha of the very bytes read, refusals."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch

from h2l.distill.checkpoint import FORMAT, StudentCheckpoint, load_checkpoint, load_checkpoint_with_sha, save_checkpoint
from h2l.errors import InputError
from h2l.model.student import ProjectionTransformer, StudentConfig

CFG = StudentConfig(16, 2, 1, 32)


def _ckpt(**kw) -> StudentCheckpoint:
    torch.manual_seed(0)
    base = dict(config=CFG, state_dict=ProjectionTransformer(CFG).state_dict(), teacher_sha256="ab" * 32,
                train_config={"steps": 3}, metrics={"final": {}}, history={"step": [1]}, complete=True, resume=None)
    return StudentCheckpoint(**{**base, **kw})


def test_round_trip_and_sha_of_the_bytes_read(tmp_path):
    save_checkpoint(tmp_path / "s.pt", _ckpt())
    back, sha = load_checkpoint_with_sha(tmp_path / "s.pt")
    assert sha == hashlib.sha256((tmp_path / "s.pt").read_bytes()).hexdigest()
    assert back.config == CFG and back.teacher_sha256 == "ab" * 32 and back.complete
    q = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(back.model()(q), _ckpt().model()(q))


def test_same_checkpoint_gives_same_bytes(tmp_path):
    save_checkpoint(tmp_path / "a.pt", _ckpt())
    save_checkpoint(tmp_path / "b.pt", _ckpt())
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_refusals(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(InputError, match="junk.pt is not a readable torch file"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not an h2l student checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": FORMAT, "format_version": 99}, tmp_path / "new.pt")
    with pytest.raises(InputError, match="newer than this h2l"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({"format": FORMAT, "format_version": 1, "config": CFG.to_dict()}, tmp_path / "partial.pt")
    with pytest.raises(InputError, match="lacks checkpoint field"):
        load_checkpoint(tmp_path / "partial.pt")


def test_pickled_object_is_refused_not_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('ran')" % str(tmp_path / "ran"),))
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "payload": Boom()}, buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(InputError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()


def test_weights_that_do_not_fit_the_config_fail_in_model(tmp_path):
    torch.manual_seed(0)
    ck = _ckpt(state_dict=ProjectionTransformer(StudentConfig(16, 2, 1, 48)).state_dict())
    save_checkpoint(tmp_path / "s.pt", ck)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_checkpoint(tmp_path / "s.pt").model()  # the CLI maps this to exit 3 (tests/test_errors.py)
