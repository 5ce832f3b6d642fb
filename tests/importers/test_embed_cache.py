"""Embedding caches must come from the model the teacher is built with (issue 20.13)."""

import numpy as np
import pytest

from conftest import DEMO_CACHE, DEMO_QA, one_line_error
from h2l.errors import InputError
from h2l.importers.embed import load_cache, save_cache
from h2l.writers import npz_bytes


def test_an_old_cache_without_a_model_name_loads_when_its_dimension_fits():
    cache = load_cache(DEMO_CACHE)  # written before caches recorded their model: 384-d MiniLM vectors
    assert len(cache) == 180 and next(iter(cache.values())).shape == (384,)
    assert len(load_cache(DEMO_CACHE, "sentence-transformers/all-MiniLM-L6-v2")) == 180


def test_save_cache_records_the_model_and_load_checks_it(tmp_path):
    p = tmp_path / "c.npz"
    save_cache(p, ["a", "b"], np.ones((2, 384), np.float32))
    assert sorted(load_cache(p)) == ["a", "b"]
    save_cache(p, ["a", "b"], np.ones((2, 8), np.float32), model="my-model")
    with pytest.raises(InputError, match="was made with model 'my-model', not 'all-MiniLM-L6-v2'"):
        load_cache(p)
    assert sorted(load_cache(p, "my-model")) == ["a", "b"]


def test_a_cache_of_the_wrong_dimension_or_unknown_origin_is_refused(tmp_path):
    p = tmp_path / "c.npz"
    p.write_bytes(npz_bytes({"texts": np.array(["a"]), "vectors": np.ones((1, 16), np.float32)}))
    with pytest.raises(InputError, match="holds d = 16 vectors, but all-MiniLM-L6-v2 embeds d = 384"):
        load_cache(p)
    with pytest.raises(InputError, match="does not record its model"):
        load_cache(p, "some-other-model")


def test_teacher_build_refuses_a_mismatched_cache(tmp_path, runner):
    """Before the fix the 16-d vectors were used as MiniLM embeddings without a word (failed before the fix)."""
    from h2l.cli import app

    with np.load(DEMO_CACHE) as z:  # every text of the demo, but 16-d vectors from some other model
        texts = z["texts"]
    p = tmp_path / "c.npz"
    vecs = np.random.default_rng(0).standard_normal((len(texts), 16)).astype(np.float32)
    p.write_bytes(npz_bytes({"texts": texts, "vectors": vecs}))
    r = runner.invoke(app, ["teacher", "build", "--qa", str(DEMO_QA), "--embeddings", str(p),
                            "--out", str(tmp_path / "t.npz")])
    one_line_error(r, 3, "holds d = 16 vectors")
    assert not (tmp_path / "t.npz").exists()
