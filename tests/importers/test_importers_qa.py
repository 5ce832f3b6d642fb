"""Teachers from Q-A text: parsing, errors naming file and cluster, split, stored metadata, real embedder."""

import json

import numpy as np
import pytest

from conftest import DEMO_CACHE, DEMO_QA
from h2l.cli import app
from h2l.errors import DependencyError, InputError
from h2l.importers import embed
from h2l.importers.npz import load_npz
from h2l.importers.qa import build_teacher, parse_qa_files, retrieval_quality

needs_embedder = pytest.mark.skipif(not embed.available()[0],
                                    reason=embed.available()[1] + "; pip install 'h2l[embed]'")


def qa_json(tmp_path, clusters, name="qa.json", **top):
    p = tmp_path / name
    p.write_text(json.dumps({"clusters": clusters, **top}))
    return p


def cluster(cid, n=4, answer="Answer text."):
    return {"id": cid, "answers": {"default": answer}, "queries": {"short": [f"{cid} q{i}" for i in range(n)]}}


def fake_embed(texts):
    """Deterministic unit vectors from text hashes: for parser/split tests only (real embedder below)."""
    out = []
    for t in texts:
        v = np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(16)
        out.append(v / np.linalg.norm(v))
    return np.array(out, np.float32)


@pytest.mark.parametrize("payload, message", [
    ("{not json", "malformed JSON at line 1"),
    (json.dumps({"clusters": []}), "'clusters' is empty"),
    (json.dumps({"items": []}), "no 'clusters' list"),
    (json.dumps({"clusters": [], "extra": 1}), "unknown top-level key"),
    (json.dumps({"clusters": [cluster("a") | {"colour": "red"}]}), "cluster 'a': unknown key\\(s\\) \\['colour'\\]"),
    (json.dumps({"clusters": [cluster("a") | {"answers": {}}]}), "cluster 'a': no answer"),
    (json.dumps({"clusters": [cluster("a") | {"queries": {}}]}), "cluster 'a': no queries"),
    (json.dumps({"clusters": [cluster("a") | {"queries": {"short": ["ok", "  "]}}]}), "cluster 'a' query in 'short'"),
    (json.dumps({"clusters": [cluster("a", answer="")]}), "cluster 'a' answer: empty"),
])
def test_malformed_json_names_file_and_cluster(tmp_path, payload, message):
    p = tmp_path / "bad.json"
    p.write_text(payload)
    with pytest.raises(InputError, match=message) as exc:
        parse_qa_files([p])
    assert "bad.json" in exc.value.message


def test_duplicate_cluster_ids_across_files(tmp_path):
    a = qa_json(tmp_path, [cluster("x")], "a.json")
    b = qa_json(tmp_path, [cluster("x")], "b.json")
    with pytest.raises(InputError, match="duplicate cluster id 'x' in .*b.json \\(also in .*a.json\\)"):
        parse_qa_files([a, b])


def test_jsonl_rows_and_errors(tmp_path):
    p = tmp_path / "qa.jsonl"
    rows = [{"cluster": c, "question": f"{c} question {i}", "answer": f"{c} answer"} for c in "ab" for i in range(3)]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cl = parse_qa_files([p])
    assert [c.id for c in cl] == ["a", "b"] and len(cl[0].queries) == 3 and cl[0].answers == ("a answer",)
    p.write_text('{"cluster": "a", "question": "q"}\n{"cluster": "a", "question": "q2", "answer": "x"}\nnot json\n')
    with pytest.raises(InputError, match="line 3 is malformed JSON"):
        parse_qa_files([p])
    p.write_text('{"cluster": "a", "question": "q", "extra": 1}\n')
    with pytest.raises(InputError, match="line 1 needs keys"):
        parse_qa_files([p])
    p.write_text('{"cluster": "a", "question": "q"}\n')
    with pytest.raises(InputError, match="cluster 'a' has no answer"):
        parse_qa_files([p])


def test_jsonl_keeps_unicode_line_separators_inside_texts(tmp_path):
    """U+2028, U+2029 and U+0085 are not line ends in JSONL (str.splitlines treats them as such); line numbers
    in errors still count "\\n" lines."""
    p = tmp_path / "qa.jsonl"
    answer = "first\u2028second\u2029third\x85fourth"
    rows = [{"cluster": "a", "question": f"why\u2028not {i}?", "answer": answer} for i in range(3)]
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\nnot json\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 4 is malformed JSON"):
        parse_qa_files([p])
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    (c,) = parse_qa_files([p])
    assert c.answers == (answer,) and [q for _, q in c.queries] == [f"why\u2028not {i}?" for i in range(3)]


def test_split_and_stored_metadata(tmp_path):
    cl = parse_qa_files([qa_json(tmp_path, [cluster("a", 5), cluster("b", 4), cluster("c", 6)])])
    t = build_teacher(cl, fake_embed, temperature=0.2, holdout_per_cluster=2, seed=3, model="m")
    qs = t.queries
    assert t.cluster_ids == ("a", "b", "c") and t.temperature == 0.2 and t.embedding_model == "m"
    assert np.bincount(qs.heldout_labels).tolist() == [2, 2, 2]
    assert np.bincount(qs.train_labels).tolist() == [3, 2, 4]
    all_q = fake_embed([q for c in cl for _, q in c.queries])
    assert len(np.unique(np.concatenate([qs.train, qs.heldout]), axis=0)) == len(all_q)  # disjoint split
    own = qs.train[qs.train_labels == 0].mean(0)
    assert np.allclose(t.centroids[0], own / np.linalg.norm(own), atol=1e-6)  # centroid from train only
    again = build_teacher(cl, fake_embed, temperature=0.2, holdout_per_cluster=2, seed=3)
    assert np.array_equal(again.queries.heldout, qs.heldout)
    with pytest.raises(InputError, match="cluster 'b' has 4 queries; 4 held out"):
        build_teacher(cl, fake_embed, holdout_per_cluster=4)


def test_missing_embedder_is_a_dependency_error(monkeypatch):
    monkeypatch.setattr(embed, "available", lambda: (False, "the embedder extra is not installed (x missing)"))
    embed._model.cache_clear()
    with pytest.raises(DependencyError, match="not installed") as exc:
        embed.embed(["hello"])
    assert "pip install 'h2l[embed]'" in exc.value.one_line() and exc.value.exit_code == 8
    embed._model.cache_clear()


def test_demo_builds_from_cache_without_embedder(tmp_path, runner, monkeypatch):
    monkeypatch.setattr(embed, "available", lambda: (False, "not installed"))
    embed._model.cache_clear()
    r = runner.invoke(app, ["teacher", "build", "--qa", str(DEMO_QA), "--embeddings", str(DEMO_CACHE),
                            "--out", str(tmp_path / "t.npz")])
    embed._model.cache_clear()
    assert r.exit_code == 0, r.output
    assert "multi-head projection" in r.stdout and "Recall@1" in r.stdout
    t = load_npz(tmp_path / "t.npz")
    assert t.n_heads == 20 and len(t.queries.heldout) == 40


@pytest.mark.embed
@needs_embedder
def test_real_embedder_json_and_jsonl(tmp_path):
    j = qa_json(tmp_path, [{"id": "tea", "answers": {"all-MiniLM-L6-v2": "Brew green tea at 80 degrees."},
                            "queries": {"short": ["green tea temperature", "how hot for tea", "tea water heat"]}},
                           {"id": "bread", "answers": {"default": "Knead the dough for ten minutes."},
                            "queries": {"short": ["knead dough", "bread kneading time", "how long to knead"]}}])
    jl = tmp_path / "more.jsonl"
    jl.write_text("\n".join(json.dumps({"cluster": "bike", "question": q, "answer": "Pump tyres to 6 bar."})
                            for q in ("tyre pressure", "how much air in tires", "bike pump psi")))
    cl = parse_qa_files([j, jl])
    t = build_teacher(cl, embed.embed, holdout_per_cluster=1, seed=0)
    assert t.dim == 384 and t.n_heads == 3 and t.embedding_model == "all-MiniLM-L6-v2"
    assert np.allclose(np.linalg.norm(t.queries.train, axis=1), 1, atol=1e-5)
    q = t.queries
    assert retrieval_quality(t, q.heldout, q.heldout_labels)["routing"]["recall_at_1"] == 1.0


@pytest.mark.embed
@needs_embedder
@pytest.mark.slow
def test_shared_data_teacher_build_reports_retrieval(tmp_path, runner, shared_qa_files):
    args = ["teacher", "build", "--out", str(tmp_path / "uw.npz"), "--json"]
    for f in shared_qa_files:
        args += ["--qa", str(f)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["n_heads"] == 30 and doc["heldout_queries"] == 60 and doc["dim"] == 384
    assert set(doc["retrieval"]) == {"plain_cosine", "projection", "routing"}
