"""Import from a real lda.db built with sqlite3 and real .npy files (float64, (1, d), float32)."""

import sqlite3

import numpy as np
import pytest

from conftest import make_lda_db
from h2l.errors import InputError
from h2l.importers.lda_db import import_lda_db
from h2l.importers.npy_dir import import_npy_dir
from h2l.importers.npz import load_npz


def test_lda_db_reads_float64_and_row_vectors(tmp_path):
    db, cents, answers = make_lda_db(tmp_path)
    t = import_lda_db(db)
    assert t.n_heads == 4 and t.dim == 6 and t.temperature == pytest.approx(0.2)
    assert t.cluster_ids == ("10", "11", "12", "13")
    assert np.allclose(t.centroids, cents, atol=1e-6) and np.allclose(t.answers, answers, atol=1e-6)
    assert t.centroids.dtype == np.float32


def test_cli_import_lda_db_then_info(tmp_path, runner):
    from h2l.cli import app

    db, _, _ = make_lda_db(tmp_path)
    out = tmp_path / "t.npz"
    r = runner.invoke(app, ["teacher", "import", "--lda-db", str(db), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert load_npz(out).n_heads == 4
    r = runner.invoke(app, ["teacher", "info", str(out)])
    assert r.exit_code == 0 and "n_heads" in r.stdout and "0.2" in r.stdout
    r = runner.invoke(app, ["teacher", "import", "--lda-db", str(db), "--out", str(out)])
    assert r.exit_code == 4 and "already exists" in r.stderr


def test_lda_db_missing_table(tmp_path):
    db = tmp_path / "lda.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE multi_head_projections (mh_projection_id INTEGER)")
    con.close()
    with pytest.raises(InputError, match="lacks table\\(s\\) cluster_heads"):
        import_lda_db(db)


def test_lda_db_unknown_projection(tmp_path):
    db, _, _ = make_lda_db(tmp_path, mh_id=3)
    with pytest.raises(InputError, match=r"no projection with mh_projection_id 1 \(available: \[3\]\)"):
        import_lda_db(db, 1)


def test_lda_db_missing_npy_names_the_head(tmp_path):
    db, _, _ = make_lda_db(tmp_path)
    (tmp_path / "embeddings" / "a2.npy").unlink()
    with pytest.raises(InputError, match="head 12 answer: file .*a2.npy does not exist"):
        import_lda_db(db)


def test_lda_db_truncated_npy(tmp_path):
    db, _, _ = make_lda_db(tmp_path)
    p = tmp_path / "embeddings" / "c1.npy"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(InputError, match="head 11 centroid: file .*c1.npy is not a readable .npy"):
        import_lda_db(db)


def test_not_sqlite(tmp_path):
    db = tmp_path / "lda.db"
    db.write_bytes(b"hello, not a database" * 100)
    with pytest.raises(InputError, match="not an SQLite database"):
        import_lda_db(db)


def test_npy_dir_both_layouts(tmp_path):
    rng = np.random.default_rng(1)
    c, a = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    flat, mh = tmp_path / "flat", tmp_path / "mh"
    flat.mkdir()
    mh.mkdir()
    for i in range(3):
        np.save(flat / f"centroid_{i}.npy", c[i][None, :])
        np.save(flat / f"answer_emb_{i}.npy", a[i])
        np.save(mh / f"mh_2_cluster_{i}_centroid.npy", c[i])
        np.save(mh / f"mh_2_cluster_{i}_answer.npy", a[i].astype(np.float32))
    for folder in (flat, mh):
        t = import_npy_dir(folder, 0.1)
        assert t.cluster_ids == ("0", "1", "2")
        assert np.allclose(t.centroids, c, atol=1e-6) and np.allclose(t.answers, a, atol=1e-6)
    with pytest.raises(InputError, match="no files for mh id 1"):
        import_npy_dir(mh, 0.1, mh_id=1)


def test_npy_dir_missing_partner_and_bad_shape(tmp_path):
    np.save(tmp_path / "centroid_a.npy", np.ones(4))
    with pytest.raises(InputError, match="head a has no answer file"):
        import_npy_dir(tmp_path, 0.1)
    np.save(tmp_path / "answer_emb_a.npy", np.ones((2, 4)))
    with pytest.raises(InputError, match=r"shape \(2, 4\), expected \(d,\) or \(1, d\)"):
        import_npy_dir(tmp_path, 0.1)


def test_cli_npy_dir_needs_temperature(tmp_path, runner):
    from h2l.cli import app

    r = runner.invoke(app, ["teacher", "import", "--npy-dir", str(tmp_path), "--out", str(tmp_path / "t.npz")])
    assert r.exit_code == 2 and "needs --temperature" in r.stderr
    assert not (tmp_path / "t.npz").exists()
