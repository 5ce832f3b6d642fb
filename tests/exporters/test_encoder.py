"""export --with-encoder: encoder.onnx, tokenizer.json, answers.jsonl and golden texts, checked for real
(onnxruntime sessions, the package's sentence-transformers model, a real SQLite lda.db)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, listing, need_embedder, rehash
from h2l.bundle.reader import open_bundle
from h2l.cli import app
from h2l.errors import IntegrityError, ParityError
from h2l.importers.npz import load_npz, save_npz
from h2l.verify.checks import verify_bundle
from h2l.verify.report import raise_for_failures

pytestmark = pytest.mark.embed


def manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def test_manifest_records_the_text_contract(rt_text_bundle):
    m = manifest(rt_text_bundle)
    enc = m["models"]["encoder"]
    assert enc["role"] == "encoder" and enc["file"] == "encoder.onnx"
    assert [(i["name"], i["dtype"], i["shape"]) for i in enc["inputs"]] == [
        ("input_ids", "int64", ["batch", "sequence"]), ("attention_mask", "int64", ["batch", "sequence"])]
    assert [(o["name"], o["dtype"], o["shape"]) for o in enc["outputs"]] == [("query_embedding", "float32",
                                                                              ["batch", 384])]
    assert enc["embedding_model"] == m["tokenizer"]["embedding_model"] == m["teacher"]["embedding_model"] \
        == "all-MiniLM-L6-v2"
    # the trap: the file truncates at 128, sentence-transformers (and so the manifest) at 256
    assert enc["max_seq_length"] == m["tokenizer"]["max_seq_length"] == 256
    assert json.loads((rt_text_bundle / "tokenizer.json").read_text())["truncation"]["max_length"] == 128
    assert m["answers"] == {"file": "answers.jsonl", "count": 20}
    listed = {f["path"]: f["sha256"] for f in m["files"]}
    for rel in ("encoder.onnx", "tokenizer.json", "answers.jsonl", "golden/texts.json",
                "golden/encoder.query_embedding.npy"):
        assert listed[rel] == hashlib.sha256((rt_text_bundle / rel).read_bytes()).hexdigest()
    assert enc["source_check"]["min_cosine"] >= 0.99999 and enc["source_check"]["ids_equal"]
    assert m["verification"]["passed"]


def test_answers_jsonl_is_head_order(rt_text_bundle, demo_teacher_npz):
    t = load_npz(demo_teacher_npz)
    rows = [json.loads(x) for x in (rt_text_bundle / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["cluster_id"] for r in rows] == list(t.cluster_ids)
    assert [r["answer"] for r in rows] == list(t.answer_texts)
    assert rows[0]["answer"].startswith("Take the wheel off")  # bike_qa.json's first cluster


def test_golden_texts_cover_the_hard_cases(rt_text_bundle):
    m = manifest(rt_text_bundle)
    rows = json.loads((rt_text_bundle / "golden" / "texts.json").read_text(encoding="utf-8"))
    emb = np.load(rt_text_bundle / "golden" / "encoder.query_embedding.npy")
    assert emb.shape == (len(rows), 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    texts = [r["text"] for r in rows]
    assert any("é" in t for t in texts) and any("\u0301" in t for t in texts)
    assert any("\u81ea" in t for t in texts) and any("🚲" in t for t in texts) and any("?!?!" in t for t in texts)
    lens = [len(r["input_ids"]) for r in rows]
    assert any(128 < n < 256 and not r["truncated"] for n, r in zip(lens, rows, strict=True))  # the 128-vs-256 trap
    assert any(n == 256 and r["truncated"] for n, r in zip(lens, rows, strict=True))
    assert all(r["input_ids"][0] == 101 and r["input_ids"][-1] == 102 for r in rows)
    ids = m["teacher"]["cluster_ids"]
    assert all(r["top_cluster"] in ids and r["top_cluster"] == r["top_clusters"]["teacher"] for r in rows)
    assert set(rows[0]["top_clusters"]) == {"teacher"}  # no student in this bundle
    assert rows[0]["top_clusters"]["teacher"] == "flat_tire_repair"  # "How do I fix a flat tyre?"


def test_encoder_matches_sentence_transformers_on_new_texts(rt_text_bundle):
    from h2l.bundle.answers import open_text_encoder
    from h2l.importers.embed import embed

    texts = ["Where do I find the spoke key size?", "ÉLAN Über crème", "链条 需要 上油 吗", "??? !!! ...", "ok"]
    got, truncated, _ = open_text_encoder(open_bundle(rt_text_bundle)).embed(texts)
    ref = embed(texts)
    assert not any(truncated)
    assert np.abs(got - ref).max() <= 1e-5
    assert (np.sum(got * ref, axis=1) >= 0.99999).all()


def test_trusting_the_files_128_truncation_fails_verify(rt_text_bundle, tmp_path):
    """A runtime that truncates at the file's 128 tokens embeds the mid-length golden text differently."""
    copy = tmp_path / "b128"
    shutil.copytree(rt_text_bundle, copy)
    m = manifest(copy)
    m["tokenizer"]["max_seq_length"] = m["models"]["encoder"]["max_seq_length"] = 128
    (copy / "manifest.json").write_text(json.dumps(m))
    report = verify_bundle(copy, provider="cpu")
    failed = {c.check for c in report.failures()}
    assert "golden:input_ids" in failed and "golden:truncated" in failed
    with pytest.raises(IntegrityError):
        raise_for_failures(report)


def test_tampered_golden_embedding_fails_verify(rt_text_bundle, tmp_path):
    copy = tmp_path / "bemb"
    shutil.copytree(rt_text_bundle, copy)
    rel = "golden/encoder.query_embedding.npy"
    arr = np.load(copy / rel)
    arr[3, 7] += 1e-3
    np.save(copy / rel, arr)
    rehash(copy, rel)
    report = verify_bundle(copy, provider="cpu")
    assert [c.check for c in report.failures()] == ["golden:query_embedding"]
    with pytest.raises(ParityError):
        raise_for_failures(report)


def test_tampered_answers_fail_verify(rt_text_bundle, tmp_path):
    copy = tmp_path / "bans"
    shutil.copytree(rt_text_bundle, copy)
    lines = (copy / "answers.jsonl").read_text(encoding="utf-8").splitlines()
    (copy / "answers.jsonl").write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n", encoding="utf-8")
    rehash(copy, "answers.jsonl")
    report = verify_bundle(copy, provider="cpu")
    assert [c.check for c in report.failures()] == ["answers_jsonl"]


def test_verify_skips_the_st_check_with_reason_when_absent(rt_text_bundle, monkeypatch):
    import h2l.importers.embed as embed

    monkeypatch.setattr(embed, "available", lambda: (False, "the embedder extra is not installed (test)"))
    report = verify_bundle(rt_text_bundle, provider="cpu")
    assert report.passed
    assert ("encoder vs sentence-transformers", "the embedder extra is not installed (test)") in report.skipped
    assert not any(c.check.startswith("vs_sentence_transformers") for c in report.checks)
    assert any(c.check == "golden:query_embedding" for c in report.checks)  # the rest still runs


@pytest.mark.parametrize("model", ["", "e5-small-v2"])
def test_with_encoder_refuses_another_embedding_model(tmp_path, runner, demo_teacher_npz, model):
    from h2l.model.teacher import make_teacher

    t = load_npz(demo_teacher_npz)
    other = make_teacher(t.centroids, t.answers, t.temperature, t.cluster_ids, embedding_model=model)
    save_npz(other, tmp_path / "t.npz")
    r = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--out", str(tmp_path / "b"),
                            "--with-encoder"])
    assert r.exit_code == 3, r.output
    assert "embedding_model is" in r.stderr and "all-MiniLM-L6-v2" in r.stderr
    assert listing(tmp_path) == ["t.npz"]


def test_lda_db_teacher_names_its_model_and_exports_with_encoder_without_answers(tmp_path, runner):
    """A real SQLite lda.db in UnifyWeaver's layout: embedding_models.name via the projection's model_id."""
    need_embedder()
    from h2l.importers.embed import embed

    emb = tmp_path / "embeddings"
    emb.mkdir()
    texts = [("10", "how do I patch a tube", "patch the tube"), ("11", "adjust my saddle", "raise the seat post"),
             ("12", "oil the chain", "lube the chain")]
    vecs = embed([t[1] for t in texts] + [t[2] for t in texts])
    db = tmp_path / "lda.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE embedding_models (model_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            dimension INTEGER NOT NULL, backend TEXT, max_tokens INTEGER, notes TEXT);
        CREATE TABLE multi_head_projections (mh_projection_id INTEGER PRIMARY KEY, model_id INTEGER
            REFERENCES embedding_models(model_id), name TEXT, temperature REAL, num_heads INTEGER);
        CREATE TABLE cluster_heads (head_id INTEGER PRIMARY KEY, mh_projection_id INTEGER, cluster_id INTEGER,
            centroid_path TEXT NOT NULL, answer_emb_path TEXT NOT NULL, W_path TEXT, num_questions INTEGER);
        INSERT INTO embedding_models VALUES (1, 'e5-small-v2', 384, NULL, NULL, NULL);
        INSERT INTO embedding_models VALUES (2, 'all-MiniLM-L6-v2', 384, 'sentence-transformers', 256, NULL);
        INSERT INTO multi_head_projections VALUES (1, 2, 'playbooks', 0.1, 3);
        INSERT INTO multi_head_projections VALUES (2, 1, 'other', 0.1, 3);
    """)
    for i, (cid, _, _) in enumerate(texts):
        np.save(emb / f"c{cid}.npy", vecs[i].astype(np.float64))
        np.save(emb / f"a{cid}.npy", vecs[3 + i].astype(np.float64))
        for mh in (1, 2):
            con.execute("INSERT INTO cluster_heads (mh_projection_id, cluster_id, centroid_path, answer_emb_path)"
                        " VALUES (?, ?, ?, ?)", (mh, int(cid), f"embeddings/c{cid}.npy", f"embeddings/a{cid}.npy"))
    con.commit()
    con.close()
    for mh, want in ((1, "all-MiniLM-L6-v2"), (2, "e5-small-v2")):
        out = tmp_path / f"t{mh}.npz"
        r = runner.invoke(app, ["teacher", "import", "--lda-db", str(db), "--mh-id", str(mh), "--out", str(out)])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["teacher", "info", str(out), "--json"])
        assert json.loads(r.stdout)["embedding_model"] == want
    r = runner.invoke(app, ["export", str(tmp_path / "t2.npz"), "--out", str(tmp_path / "b2"),
                            "--with-encoder"])
    assert r.exit_code == 3 and "e5-small-v2" in r.stderr
    r = runner.invoke(app, ["export", str(tmp_path / "t1.npz"), "--out", str(tmp_path / "b1"),
                            "--with-encoder"])
    assert r.exit_code == 0, r.output
    m = manifest(tmp_path / "b1")
    assert "answers" not in m and not (tmp_path / "b1" / "answers.jsonl").exists() and "encoder" in m["models"]
    r = runner.invoke(app, ["ask", str(tmp_path / "b1"), "how can I fix a punctured tube", "--no-embedding"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)
    assert row["answer"] is None and row["top_cluster"] == "10" and "no answers.jsonl" in r.stderr


@pytest.mark.slow
def test_encoder_bytes_are_reproducible_across_processes(rt_text_bundle):
    """A fresh process exports the encoder again: the same sha256 as the bundle's encoder.onnx."""
    code = ("import hashlib\n"
            "from h2l.exporters.onnx_encoder import make_encoder_model, sentence_transformer\n"
            "from h2l.exporters.onnx_common import serialize\n"
            "print(hashlib.sha256(serialize(make_encoder_model(sentence_transformer()), 'e')).hexdigest())\n")
    p = subprocess.run(["nice", "-n", "10", sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=REPO, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert p.returncode == 0, p.stderr[-2000:]
    want = hashlib.sha256((rt_text_bundle / "encoder.onnx").read_bytes()).hexdigest()
    assert p.stdout.strip().splitlines()[-1] == want


@pytest.mark.slow
def test_shared_unifyweaver_qa_gives_an_encoder_bundle(tmp_path, runner, shared_qa_files):
    need_embedder()
    args = ["teacher", "build", "--out", str(tmp_path / "t.npz"), "--json"]
    for f in shared_qa_files:
        args += ["--qa", str(f)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    t = load_npz(tmp_path / "t.npz")
    assert t.embedding_model == "all-MiniLM-L6-v2" and len(t.answer_texts) == t.n_heads
    r = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--out", str(tmp_path / "b"),
                            "--with-encoder"])
    assert r.exit_code == 0, r.output
    report = verify_bundle(tmp_path / "b", provider="cpu")
    assert report.passed and any(c.check == "vs_sentence_transformers:min_cosine" for c in report.checks)
    r = runner.invoke(app, ["ask", str(tmp_path / "b"), "How do I read CSV files in UnifyWeaver?",
                            "--no-embedding"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)
    assert row["top_cluster"] == "csv_data_source" and "CSV" in row["answer"]


def test_answer_texts_round_trip_and_validation(tmp_path, demo_teacher_npz):
    from h2l.errors import InputError
    from h2l.model.teacher import make_teacher

    t = load_npz(demo_teacher_npz)
    assert len(t.answer_texts) == t.n_heads and t.answer_texts[0].startswith("Take the wheel off")
    with pytest.raises(InputError, match="answer texts"):
        make_teacher(t.centroids, t.answers, t.temperature, t.cluster_ids, answer_texts=t.answer_texts[:-1])
    bare = make_teacher(t.centroids, t.answers, t.temperature, t.cluster_ids)
    save_npz(bare, tmp_path / "bare.npz")
    assert load_npz(tmp_path / "bare.npz").answer_texts is None
    assert bare.fingerprint() == t.fingerprint()  # answer texts do not change the math, nor the student's pairing
