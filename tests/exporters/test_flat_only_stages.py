"""Stages built for the flat family refuse a general teacher (exit 3, a clear fix) instead of computing garbage."""

import numpy as np
import pytest

from conftest import listing, one_line_error
from h2l.errors import InputError
from h2l.importers.npz import save_npz
from h2l.model.teacher import make_teacher


@pytest.fixture
def affine_npz(tmp_path):
    rng = np.random.default_rng(0)
    t = make_teacher(rng.standard_normal((4, 8)), np.zeros((4, 8)), 0.1, name="aff",
                     head_weights=rng.standard_normal((4, 8, 8)))
    p = tmp_path / "aff.npz"
    save_npz(t, p)
    return p


@pytest.mark.parametrize("args, stage", [
    (["export", "--out", "{out}", "--teacher", "{t}"], "h2l export supports flat"),
    (["export", "--out", "{out}", "--teacher", "{t}", "--routed"], "h2l export supports flat"),
    (["export", "--out", "{out}", "--teacher", "{t}", "--format", "npy"], "h2l export --format npy supports flat"),
    (["distill", "{t}", "--out", "{out}", "--steps", "2"], "h2l distill supports flat"),
])
def test_flat_only_stages_refuse_an_affine_teacher(tmp_path, runner, affine_npz, args, stage):
    from h2l.cli import app

    out = tmp_path / "out"
    r = runner.invoke(app, [a.format(out=out, t=affine_npz) for a in args])
    one_line_error(r, 3, stage, "affine heads (4 d × d matrices)")
    assert listing(tmp_path) == ["aff.npz"]


def test_bench_variants_and_routed_model_refuse_too(affine_npz):
    from h2l.bench.suites import variants
    from h2l.exporters.routed_export import routed_model
    from h2l.importers.npz import load_npz

    t = load_npz(affine_npz)
    with pytest.raises(InputError, match="h2l bench supports flat"):
        variants(t, None, threads=1, providers={"cpu"})
    with pytest.raises(InputError, match="h2l export --routed supports flat"):
        routed_model(t)
