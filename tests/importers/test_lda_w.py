"""lda.db heads with a per-head matrix (cluster_heads.W_path), against LDAProjectionDB.multi_head_search's formula."""

import sqlite3

import numpy as np
import pytest

from conftest import UW_MODELS, UW_SCHEMA, make_lda_db, one_line_error, rand_queries
from h2l.errors import InputError
from h2l.importers.lda_db import import_lda_db
from h2l.importers.npz import load_npz

LDA_W = UW_MODELS / "lda_w" / "lda.db"


def multi_head_search(q, C, A, Ws, tau):
    """UnifyWeaver's lda_database.py L1418–1450 in float64, one query at a time (W @ q on the raw q, then y/‖y‖)."""
    q = q.astype(np.float64)
    n = np.linalg.norm(q)
    qn = q / n if n > 0 else q
    cn = np.where(np.linalg.norm(C, axis=1, keepdims=True) > 0, np.linalg.norm(C, axis=1, keepdims=True), 1)
    s = (C / cn) @ qn / tau
    w = np.exp(s - s.max())
    w /= w.sum()
    y = np.zeros_like(q)
    for i, W in enumerate(Ws):
        y += w[i] * (W @ q) if W is not None else w[i] * A[i]
    n = np.linalg.norm(y)
    return y / n if n > 0 else y


def read_db(db):
    """The heads as UnifyWeaver's load_multi_head_data reads them (ORDER BY cluster_id), paths from the db folder."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (tau,) = con.execute("SELECT temperature FROM multi_head_projections WHERE mh_projection_id = 1").fetchone()
    rows = con.execute("SELECT centroid_path, answer_emb_path, W_path FROM cluster_heads WHERE mh_projection_id = 1 "
                       "ORDER BY cluster_id").fetchall()
    con.close()
    base = db.parent
    C = np.stack([np.load(base / c).astype(np.float64).reshape(-1) for c, _, _ in rows])
    A = np.stack([np.load(base / a).astype(np.float64).reshape(-1) for _, a, _ in rows])
    return C, A, [np.load(base / w).astype(np.float64) if w else None for _, _, w in rows], tau


@pytest.fixture(scope="module")
def lda_w():
    if not LDA_W.is_file():
        pytest.skip(f"UnifyWeaver lda_w model not found at {LDA_W} (set H2L_SHARED_ROOT)")
    return LDA_W


def test_real_lda_w_reproduces_multi_head_search(lda_w):
    C, A, Ws, tau = read_db(lda_w)
    t = import_lda_db(lda_w)
    assert (t.n_heads, t.dim, t.head_kind, t.normalize_output) == (12, 384, "affine", True)
    assert sum(W is not None for W in Ws) == 8 and t.embedding_model == "all-MiniLM-L6-v2"
    rng = np.random.default_rng(0)
    q = np.vstack([C[:12] + 0.2 * rng.standard_normal((12, 384)), rng.standard_normal((6, 384))]).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[-1] *= 0.5  # not unit-norm: W @ q uses the raw query, routing the normalised one
    got, _ = t.project(q)
    ref = np.stack([multi_head_search(x, C, A, Ws, tau) for x in q])
    assert np.abs(got - ref).max() < 1e-5
    # heads without W fall back to their answer (W = 0, b = answer); heads with W have b = 0
    for i, W in enumerate(Ws):
        np.testing.assert_allclose(t.head_weights[i], 0 if W is None else W.T, atol=0)
        np.testing.assert_allclose(t.answers[i], A[i] if W is None else 0, atol=1e-7)


def test_real_lda_w_output_normalisation_only_changes_the_length(lda_w):
    """Where normalisation matters: magnitudes (golden vectors, an MSE loss), never directions or routing."""
    t = import_lda_db(lda_w)
    raw = t._rebuild(normalize_output=False)
    q = rand_queries(5, 384, seed=2)
    y, w = t.project(q)
    yr, wr = raw.project(q)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, atol=1e-6)
    assert np.abs(np.linalg.norm(yr, axis=1) - 1).max() > 0.1  # so the flag is not a no-op on this db
    np.testing.assert_allclose(yr / np.linalg.norm(yr, axis=1, keepdims=True), y, atol=1e-6)
    np.testing.assert_array_equal(w, wr)


def write_uw_w_db(root, d=5, seed=0):
    """An lda.db as LDAProjectionDB.add_cluster_head writes it: 2 heads with an asymmetric W, 1 without."""
    rng = np.random.default_rng(seed)
    (root / "embeddings").mkdir(parents=True)
    con = sqlite3.connect(root / "lda.db")
    con.executescript(UW_SCHEMA)
    con.execute("INSERT INTO multi_head_projections (model_id, name, temperature, num_heads) VALUES (1, 'w', 0.5, 3)")
    C, A, Ws = rng.standard_normal((3, d)), rng.standard_normal((3, d)), []
    for i, cid in enumerate((3, 5, 9)):
        paths = [f"embeddings/mh_1_cluster_{cid}_{k}.npy" for k in ("centroid", "answer", "W")]
        np.save(root / paths[0], C[i])
        np.save(root / paths[1], A[i])
        W = rng.standard_normal((d, d)) if i < 2 else None  # float64, as UnifyWeaver saves it
        if W is not None:
            np.save(root / paths[2], W)
        Ws.append(W)
        con.execute("INSERT INTO cluster_heads (mh_projection_id, cluster_id, centroid_path, answer_emb_path, W_path, "
                    "num_questions) VALUES (1, ?, ?, ?, ?, 4)", (cid, paths[0], paths[1], paths[2] if i < 2 else None))
    con.commit()
    con.close()
    return root / "lda.db", C, A, Ws


def test_asymmetric_w_is_applied_as_w_at_q(tmp_path):
    db, C, A, Ws = write_uw_w_db(tmp_path)
    t = import_lda_db(db)
    q = rand_queries(6, 5, seed=3)
    got, _ = t.project(q)
    ref = np.stack([multi_head_search(x, C, A, Ws, 0.5) for x in q])
    transposed = np.stack([multi_head_search(x, C, A, [None if W is None else W.T for W in Ws], 0.5) for x in q])
    assert np.abs(got - ref).max() < 1e-5
    assert np.abs(got - transposed).max() > 0.05  # q @ W instead of W @ q would be caught


def test_cli_import_of_a_w_db_writes_a_v2_teacher_and_info_shows_it(tmp_path, runner):
    import json

    from h2l.cli import app

    db, *_ = write_uw_w_db(tmp_path / "m")
    out = tmp_path / "t.npz"
    r = runner.invoke(app, ["teacher", "import", "--lda-db", str(db), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "affine heads" in r.stdout and load_npz(out).head_kind == "affine"
    r = runner.invoke(app, ["teacher", "info", str(out), "--json"])
    info = json.loads(r.stdout)
    assert (info["head_kind"], info["n_keys"], info["n_heads"], info["w_bytes"]) == ("affine", 3, 3, 3 * 5 * 5 * 4)
    assert info["normalize_output"] is True and info["routing"] is None and "skipped" in info["routing_note"]
    r = runner.invoke(app, ["teacher", "info", str(out)])
    assert "head_kind        affine" in r.stdout and "routing profile: skipped" in r.stdout


def test_bad_w_files(tmp_path):
    db, *_ = write_uw_w_db(tmp_path)
    np.save(tmp_path / "embeddings" / "mh_1_cluster_5_W.npy", np.ones((5, 4)))
    with pytest.raises(InputError, match=r"head 5 W: file .* has dtype float64, shape \(5, 4\), expected \(5, 5\)"):
        import_lda_db(db)
    (tmp_path / "embeddings" / "mh_1_cluster_5_W.npy").unlink()
    with pytest.raises(InputError, match="head 5 W: file embeddings/mh_1_cluster_5_W.npy does not exist; tried"):
        import_lda_db(db)


def test_db_under_a_folder_with_uri_characters(tmp_path):
    """Issue 20.3: an unquoted file: URI cut the path at '#' and opened (and created) tmp/we (failed before the fix)."""
    root = tmp_path / "we#ird?x"
    db, cents, _ = make_lda_db(root)
    t = import_lda_db(db)
    assert t.n_heads == 4 and np.allclose(t.centroids, cents, atol=1e-6)
    assert not (tmp_path / "we").exists()


def test_lda_db_with_temperature_is_a_usage_error(tmp_path, runner):
    from h2l.cli import app

    db, *_ = make_lda_db(tmp_path)
    r = runner.invoke(app, ["teacher", "import", "--lda-db", str(db), "--temperature", "0.5",
                            "--out", str(tmp_path / "t.npz")])
    one_line_error(r, 2, "--lda-db stores τ, so --temperature would be ignored")
    assert not (tmp_path / "t.npz").exists()
