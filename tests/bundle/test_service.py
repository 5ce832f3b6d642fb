"""h2l.Bundle as a service API, sentence-transformers style: ``Bundle(path)``, ``.embed(texts, batch_size=)``,
``.ask(texts, top_k=)`` beside ``.project``; provider defaulting as the CLI's; typed ``public_key``."""

from __future__ import annotations

import numpy as np
import pytest

import h2l
from h2l.ask import open_asker
from h2l.bundle.signing import load_public_key
from h2l.errors import InputError, IntegrityError, OutputError, ProviderError
from h2l.exporters.onnx_teacher import teacher_arrays
from h2l.importers.npz import load_npz
from h2l.runtime.sessions import cuda_status
from hostile import keypair, signed_copy
from test_ask import demo_questions, student_text_bundle  # noqa: F401 - the module fixture, used below


@pytest.fixture
def bundle(tmp_path, small_teacher):
    return h2l.export_bundle(small_teacher, tmp_path / "b").out


def test_bundle_path_opens_and_open_is_the_same(bundle):
    b = h2l.Bundle(bundle)
    assert b.models == ("teacher",) and b.dim == 32
    assert b.provider == ("cuda" if cuda_status()[0] else "cpu")  # "auto", as `h2l verify` chooses
    o = h2l.Bundle.open(bundle, provider="cpu")
    q = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    np.testing.assert_allclose(b.project(q), o.project(q), atol=1e-5)
    assert o.provider == "cpu" and "provider='cpu'" in repr(o)


def test_bundle_refuses_a_provider_it_cannot_use(bundle):
    with pytest.raises(ProviderError, match="unknown provider 'tpu'") as e:
        h2l.Bundle(bundle, provider="tpu")
    assert e.value.exit_code == 7
    if not cuda_status()[0]:
        with pytest.raises(ProviderError, match="CUDA"):
            h2l.Bundle(bundle, provider="cuda")


@pytest.mark.parametrize("form", ["str", "path", "bytes", "key"])
def test_public_key_takes_a_path_a_string_pem_bytes_or_a_key(bundle, tmp_path, form):
    key, pub = keypair(tmp_path)
    signed = signed_copy(bundle, tmp_path / "signed", key)
    pinned = {"str": str(pub), "path": pub, "bytes": pub.read_bytes(), "key": load_public_key(pub)}[form]
    assert h2l.Bundle(signed, public_key=pinned).models == ("teacher",)
    with pytest.raises(IntegrityError, match="unsigned bundle"):
        h2l.Bundle(bundle, public_key=pinned)


def test_embed_and_ask_need_an_encoder(bundle):
    b = h2l.Bundle(bundle)
    for call in (lambda: b.embed(["hello"]), lambda: b.ask(["hello"])):
        with pytest.raises(InputError, match="has no encoder") as e:
            call()
        assert e.value.exit_code == 3


@pytest.mark.embed
def test_embed_matches_the_golden_encoder_embeddings(rt_text_bundle):
    import json

    golden = json.loads((rt_text_bundle / "golden" / "texts.json").read_text(encoding="utf-8"))
    want = np.load(rt_text_bundle / "golden" / "encoder.query_embedding.npy")
    b = h2l.Bundle(rt_text_bundle)
    texts = [g["text"] for g in golden]
    one_by_one = b.embed(texts, batch_size=1)
    assert one_by_one.dtype == np.float32 and one_by_one.shape == want.shape
    np.testing.assert_allclose(one_by_one, want, atol=1e-5)
    np.testing.assert_allclose(b.embed(texts), want, atol=1e-4)  # batches of 32, padded: rounding only
    single = b.embed(texts[0])
    assert single.shape == (want.shape[1],)
    np.testing.assert_allclose(single, want[0], atol=1e-5)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="batch_size"):
            b.embed(texts, batch_size=bad)
    with pytest.raises(InputError, match="empty or whitespace"):
        b.embed(["fine", "   "])
    with pytest.raises(InputError, match="no texts"):
        b.embed([])


def _check_rows(rows, ref_rows, top_k):
    for row, ref in zip(rows, ref_rows, strict=True):
        top = row.pop("top")
        assert list(row) == list(ref)  # the keys `h2l ask` prints, in its order
        assert {k: row[k] for k in ("text", "top_cluster", "answer", "truncated")} == \
            {k: ref[k] for k in ("text", "top_cluster", "answer", "truncated")}
        assert row["top_weight"] == pytest.approx(ref["top_weight"], abs=1e-6)
        assert len(top) == top_k and len({t["cluster_id"] for t in top}) == top_k
        assert top[0] == {"cluster_id": row["top_cluster"], "weight": row["top_weight"], "answer": row["answer"]}
        assert all(a["weight"] >= b["weight"] for a, b in zip(top, top[1:], strict=False))


@pytest.mark.embed
def test_ask_returns_what_h2l_ask_returns_with_the_top_k_heads(rt_text_bundle, demo_teacher_npz):
    """Checked against `h2l ask`'s own code and, for the ranking, the numpy teacher on the same embeddings."""
    qs = [q for q, _ in demo_questions()[:4]]
    b = h2l.Bundle(rt_text_bundle)
    rows = b.ask(qs, top_k=3)
    _check_rows(rows, open_asker(rt_text_bundle).ask(qs, embedding=False), 3)
    t = load_npz(demo_teacher_npz)
    _, w = t.project(b.embed(qs, batch_size=1))
    want = [[t.cluster_ids[i] for i in np.argsort(-wi, kind="stable")[:3]] for wi in w]
    rows = b.ask(qs, top_k=3)
    assert [[x["cluster_id"] for x in r["top"]] for r in rows] == want
    np.testing.assert_allclose([[x["weight"] for x in r["top"]] for r in rows], np.sort(w, axis=1)[:, ::-1][:, :3],
                               atol=1e-5)
    assert [x["answer"] for x in rows[0]["top"]] == [t.answer_texts[t.cluster_ids.index(c)] for c in want[0]]
    one = b.ask(qs[0], top_k=2, embedding=True)  # one str: one row, with the embedding `h2l ask` prints
    assert isinstance(one, dict) and len(one["top"]) == 2
    np.testing.assert_allclose(one["embedding"], b.embed(qs[0], batch_size=1), atol=1e-6)
    n = len(t.cluster_ids)
    assert len(b.ask(qs[0], top_k=n)["top"]) == n
    for bad in (0, n + 1, 1.5, True):
        with pytest.raises(InputError, match="top_k") as e:
            b.ask(qs, top_k=bad)
        assert e.value.exit_code == 3


@pytest.mark.slow
@pytest.mark.embed
def test_ask_on_a_student_ranks_by_cosine_to_the_answers(student_text_bundle, demo_teacher_npz):  # noqa: F811
    qs = [q for q, _ in demo_questions()[:5]]
    b = h2l.Bundle(student_text_bundle)
    rows = b.ask(qs, top_k=4)  # auto: the student
    _check_rows(rows, open_asker(student_text_bundle).ask(qs, embedding=False), 4)
    proj = b.project(b.embed(qs, batch_size=1))
    _, answers = teacher_arrays((student_text_bundle / "teacher.onnx").read_bytes())
    a = answers / np.linalg.norm(answers, axis=1, keepdims=True)
    cos = (proj / np.linalg.norm(proj, axis=1, keepdims=True)) @ a.T
    ids = load_npz(demo_teacher_npz).cluster_ids
    assert [[x["cluster_id"] for x in r["top"]] for r in b.ask(qs, top_k=4)] == \
        [[ids[i] for i in np.argsort(-c, kind="stable")[:4]] for c in cos]
    teacher_rows = b.ask(qs, top_k=2, model="teacher")
    _check_rows(teacher_rows, open_asker(student_text_bundle, "teacher").ask(qs, embedding=False), 2)


def test_distill_teacher_refuses_an_existing_out_unless_force(tmp_path, small_teacher):
    out = tmp_path / "s.pt"
    out.write_bytes(b"someone's checkpoint")
    with pytest.raises(OutputError, match="already exists") as e:
        h2l.distill_teacher(small_teacher, out, steps=2, batch_size=16, ff_dim=16)
    assert e.value.exit_code == 4 and out.read_bytes() == b"someone's checkpoint"
    res = h2l.distill_teacher(small_teacher, out, steps=2, batch_size=16, ff_dim=16, force=True)
    assert res.checkpoint is not None and out.read_bytes() != b"someone's checkpoint"
