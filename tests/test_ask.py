"""h2l ask: text in, answer out, against independent references (the demo's sentence-transformers
embedding cache, the numpy teacher, the golden texts), and bad input without partial output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DEMO_CACHE, DEMO_QA
from h2l.ask import open_asker
from h2l.cli import app
from h2l.errors import InputError
from h2l.importers.embed import load_cache
from h2l.importers.npz import load_npz
from h2l.metrics import cosine

pytestmark = pytest.mark.embed
FIELDS = {"text", "top_cluster", "top_weight", "answer", "embedding", "truncated"}


def lines(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines()]


def demo_questions(per_cluster: int = 1) -> list[tuple[str, str]]:
    doc = json.loads(DEMO_QA.read_text())
    out = []
    for c in doc["clusters"]:
        qs = [q for group in c["queries"].values() for q in group]
        out += [(q, c["id"]) for q in qs[:per_cluster]]
    return out


def test_ask_matches_st_cache_and_numpy_teacher(rt_text_bundle, runner, demo_teacher_npz):
    qs = demo_questions()[:6]
    r = runner.invoke(app, ["ask", str(rt_text_bundle), *[q for q, _ in qs]])
    assert r.exit_code == 0, r.output
    rows = lines(r.stdout)
    assert len(rows) == len(qs) and all(set(row) == FIELDS for row in rows)
    assert [row["text"] for row in rows] == [q for q, _ in qs]
    assert "model teacher" in r.stderr and "{" not in r.stderr
    cache = load_cache(DEMO_CACHE)  # computed by sentence-transformers when the demo data was written
    t = load_npz(demo_teacher_npz)
    emb = np.array([row["embedding"] for row in rows], np.float32)
    ref = np.stack([cache[q] for q, _ in qs])
    assert np.abs(emb - ref).max() <= 1e-5
    _, w = t.project(ref)
    assert [row["top_cluster"] for row in rows] == [t.cluster_ids[i] for i in w.argmax(axis=1)]
    assert np.allclose([row["top_weight"] for row in rows], w.max(axis=1), atol=1e-5)
    assert [row["answer"] for row in rows] == [t.answer_texts[t.cluster_ids.index(row["top_cluster"])]
                                               for row in rows]
    assert not any(row["truncated"] for row in rows)


def test_answers_with_line_separators_build_export_verify_and_ask_intact(tmp_path, runner):
    """A Q-A JSONL teacher whose answers hold U+2028, U+2029 and U+0085 (issue 20): the demo's questions and
    answers, embedded from the demo cache extended by the new answer texts (the base answer's vector)."""
    import numpy as np

    doc = json.loads(DEMO_QA.read_text())
    cache = load_cache(DEMO_CACHE)
    rows, answers, extra = [], {}, {}
    for c in doc["clusters"]:
        base = c["answers"]["default"].strip()
        answers[c["id"]] = f"{base}\u2028line separator\u2029paragraph separator\x85next line"
        extra[answers[c["id"]]] = cache[base]
        rows += [{"cluster": c["id"], "question": q, "answer": answers[c["id"]]}
                 for group in c["queries"].values() for q in group]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                       encoding="utf-8")
    with np.load(DEMO_CACHE) as z:
        arrays = dict(z)
    arrays["texts"] = np.concatenate([arrays["texts"], np.array(list(extra))])
    arrays["vectors"] = np.concatenate([arrays["vectors"], np.stack(list(extra.values()))]).astype(np.float32)
    np.savez(tmp_path / "cache.npz", **arrays)

    r = runner.invoke(app, ["teacher", "build", "--qa", str(tmp_path / "qa.jsonl"), "--embeddings",
                            str(tmp_path / "cache.npz"), "--out", str(tmp_path / "t.npz"), "--json"])
    assert r.exit_code == 0, r.output
    assert list(load_npz(tmp_path / "t.npz").answer_texts) == list(answers.values())
    r = runner.invoke(app, ["export", str(tmp_path / "t.npz"), "--out", str(tmp_path / "b"), "--with-encoder"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--provider", "cpu"])
    assert r.exit_code == 0, r.output
    qs = demo_questions()[:4]
    r = runner.invoke(app, ["ask", str(tmp_path / "b"), *[q for q, _ in qs], "--no-embedding"])
    assert r.exit_code == 0, r.output
    # one line per text even for splitlines: the three are escaped in the output, and come back from JSON
    assert not any(c in r.stdout for c in "\u2028\u2029\x85") and len(r.stdout.splitlines()) == len(qs)
    got = lines(r.stdout)
    assert len(got) == len(qs) and all(row["answer"] == answers[row["top_cluster"]] for row in got)
    assert all(all(sep in row["answer"] for sep in "\u2028\u2029\x85") for row in got)


def test_ask_reproduces_golden_texts(rt_text_bundle):
    golden = json.loads((rt_text_bundle / "golden" / "texts.json").read_text(encoding="utf-8"))
    want = np.load(rt_text_bundle / "golden" / "encoder.query_embedding.npy")
    rows = open_asker(rt_text_bundle).ask([g["text"] for g in golden])
    assert [r["top_cluster"] for r in rows] == [g["top_cluster"] for g in golden]
    assert [r["truncated"] for r in rows] == [g["truncated"] for g in golden]
    assert np.abs(np.array([r["embedding"] for r in rows], np.float32) - want).max() <= 1e-5


def test_no_embedding_and_truncation_note(rt_text_bundle, runner):
    long = "why does my wheel wobble " * 120
    r = runner.invoke(app, ["ask", str(rt_text_bundle), "flat tyre", long, "--no-embedding"])
    assert r.exit_code == 0, r.output
    rows = lines(r.stdout)
    assert [set(x) for x in rows] == [FIELDS - {"embedding"}] * 2
    assert rows[0]["truncated"] is False and rows[1]["truncated"] is True
    assert "text #2 was cut to 256 tokens" in r.stderr


@pytest.mark.parametrize("bad, what", [("", "empty"), (" \t\n ", "whitespace"), ("a\x00b", "NUL"),
                                       ("a\udcffb", "UTF-8")])
def test_bad_text_is_refused_without_partial_output(rt_text_bundle, runner, bad, what):
    r = runner.invoke(app, ["ask", str(rt_text_bundle), "a good question", bad])
    assert r.exit_code == 3, r.output
    assert r.stdout == "" and what in r.stderr and "text #2" in r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(InputError):
        open_asker(rt_text_bundle).ask([bad])


def test_bundle_without_encoder_or_model(tmp_path, runner, rt_text_bundle, small_teacher):
    from h2l.export import export_onnx

    export_onnx(small_teacher, tmp_path / "plain")
    r = runner.invoke(app, ["ask", str(tmp_path / "plain"), "hello"])
    assert r.exit_code == 3 and "has no encoder" in r.stderr and "--with-encoder" in r.stderr
    r = runner.invoke(app, ["ask", str(rt_text_bundle), "hello", "--model", "student"])
    assert r.exit_code == 3 and "no student model" in r.stderr
    r = runner.invoke(app, ["ask", str(rt_text_bundle), "hello", "--model", "routed"])
    assert r.exit_code == 3 and "no routed model" in r.stderr
    r = runner.invoke(app, ["ask", str(rt_text_bundle), "hello", "--model", "bogus"])
    assert r.exit_code == 2


@pytest.fixture(scope="module")
def student_text_bundle(tmp_path_factory, demo_teacher_npz):
    """A deliberately short distillation (fidelity is not what is tested here: the student's top cluster is)."""
    root = tmp_path_factory.mktemp("st_text")
    from typer.testing import CliRunner

    r = CliRunner()
    res = r.invoke(app, ["distill", str(demo_teacher_npz), "--out", str(root / "s.pt"), "--steps", "60",
                         "--batch-size", "128", "--ff-dim", "32", "--eval-every", "20", "--quiet"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["export", str(demo_teacher_npz), "--student", str(root / "s.pt"),
                         "--out", str(root / "bundle"), "--min-cosine", "0", "--with-encoder"])
    assert res.exit_code == 0, res.output
    return root / "bundle"


@pytest.mark.slow
def test_student_top_cluster_is_nearest_answer(student_text_bundle, runner, demo_teacher_npz):
    from h2l.runtime.sessions import make_runner

    t = load_npz(demo_teacher_npz)
    qs = [q for q, _ in demo_questions()[:5]]
    r = runner.invoke(app, ["ask", str(student_text_bundle), *qs])  # default: the student
    assert r.exit_code == 0, r.output
    rows = lines(r.stdout)
    assert "model student" in r.stderr
    emb = np.array([row["embedding"] for row in rows], np.float32)
    proj = make_runner(student_text_bundle / "student.onnx").run(emb)["projected_embedding"]
    a = t.answers / np.linalg.norm(t.answers, axis=1, keepdims=True)
    cos = cosine(np.repeat(proj, len(a), axis=0), np.tile(a, (len(proj), 1))).reshape(len(proj), len(a))
    assert [row["top_cluster"] for row in rows] == [t.cluster_ids[i] for i in cos.argmax(axis=1)]
    assert np.allclose([row["top_weight"] for row in rows], cos.max(axis=1), atol=1e-5)
    golden = json.loads((student_text_bundle / "golden" / "texts.json").read_text(encoding="utf-8"))
    assert all(g["top_cluster"] == g["top_clusters"]["student"] for g in golden)
    r = runner.invoke(app, ["ask", str(student_text_bundle), *qs, "--model", "teacher", "--no-embedding"])
    _, w = t.project(emb)
    assert [row["top_cluster"] for row in lines(r.stdout)] == [t.cluster_ids[i] for i in w.argmax(axis=1)]
