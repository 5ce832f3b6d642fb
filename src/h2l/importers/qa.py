"""Teachers from question–answer text: UnifyWeaver's Q-A JSON and plain JSONL.

UnifyWeaver JSON: ``{"clusters": [{"id", "answers": {model|"default": text}, "queries": {group: [text]}}]}``.
JSONL: one ``{"cluster", "question", "answer"}`` object per line.
One head per cluster: centroid = normalised mean of its training queries,
answer = normalised mean of its answer embeddings.  Held-out queries (K per
cluster, seeded) are stored with the teacher and never used for its centroids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..model.teacher import QuerySet, Teacher, make_teacher

_TOP_KEYS = {"version", "description", "notes", "embedding_models", "clusters"}
_CLUSTER_KEYS = {"id", "answer_source", "answers", "queries", "description"}
_ROW_KEYS = {"cluster", "question", "answer"}


@dataclass(frozen=True)
class QACluster:
    id: str
    answers: tuple[str, ...]
    queries: tuple[tuple[str, str], ...]  # (group, text)
    source: str


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: empty or non-string text", "give every question and answer some text")
    return value.strip()


def _parse_json(path: Path, model: str) -> list[QACluster]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg})",
                         "fix the JSON syntax") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list):
        raise InputError(f"{path}: no 'clusters' list at the top level", "use UnifyWeaver's Q-A JSON layout or JSONL")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise InputError(f"{path}: unknown top-level key(s) {sorted(unknown)}", f"use only {sorted(_TOP_KEYS)}")
    if not doc["clusters"]:
        raise InputError(f"{path}: 'clusters' is empty", "add at least one cluster")
    out = []
    for i, c in enumerate(doc["clusters"]):
        if not isinstance(c, dict) or "id" not in c:
            raise InputError(f"{path}: cluster #{i} is not an object with an 'id'", "give every cluster an id")
        cid = str(c["id"]).strip()
        where = f"{path}: cluster {cid!r}"
        if not cid:
            raise InputError(f"{path}: cluster #{i} has an empty id", "give every cluster an id")
        unknown = set(c) - _CLUSTER_KEYS
        if unknown:
            raise InputError(f"{where}: unknown key(s) {sorted(unknown)}", f"use only {sorted(_CLUSTER_KEYS)}")
        ans = c.get("answers")
        if isinstance(ans, dict):
            ans = ans.get(model, ans.get("default"))
        if isinstance(ans, str):
            ans = [ans]
        if not ans:
            raise InputError(f"{where}: no answer (for {model!r} or 'default')", "add an answer text")
        answers = tuple(_text(a, f"{where} answer") for a in ans)
        qs = c.get("queries")
        if isinstance(qs, list):
            qs = {"queries": qs}
        if not isinstance(qs, dict) or not any(qs.values()):
            raise InputError(f"{where}: no queries", "add at least two questions per cluster")
        queries = []
        for group, texts in qs.items():
            if not isinstance(texts, list):
                raise InputError(f"{where}: queries[{group!r}] is not a list", "list the questions")
            queries += [(str(group), _text(t, f"{where} query in {group!r}")) for t in texts]
        out.append(QACluster(cid, answers, tuple(queries), str(path)))
    return out


def _parse_jsonl(path: Path) -> list[QACluster]:
    clusters: dict[str, tuple[list[str], list[tuple[str, str]]]] = {}
    # "\n" only: splitlines also splits at U+2028, U+2029 and U+0085, which a JSON string may hold raw
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {n} is malformed JSON ({exc.msg})", "one JSON object per line") from None
        if not isinstance(row, dict) or set(row) - _ROW_KEYS or not {"cluster", "question"} <= set(row):
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise InputError(f"{path}: line {n} needs keys cluster, question, answer (got {got})",
                             "write {\"cluster\": ..., \"question\": ..., \"answer\": ...} rows")
        cid = str(row["cluster"]).strip()
        if not cid:
            raise InputError(f"{path}: line {n} has an empty cluster", "name the cluster")
        answers, queries = clusters.setdefault(cid, ([], []))
        queries.append(("jsonl", _text(row["question"], f"{path}: line {n} (cluster {cid!r}) question")))
        if row.get("answer") is not None:
            a = _text(row["answer"], f"{path}: line {n} (cluster {cid!r}) answer")
            if a not in answers:
                answers.append(a)
    if not clusters:
        raise InputError(f"{path}: no rows", "add {cluster, question, answer} rows")
    for cid, (answers, _) in clusters.items():
        if not answers:
            raise InputError(f"{path}: cluster {cid!r} has no answer", "give at least one row an answer")
    return [QACluster(cid, tuple(a), tuple(q), str(path)) for cid, (a, q) in clusters.items()]


def parse_qa_files(paths: list[Path], model: str = "all-MiniLM-L6-v2") -> list[QACluster]:
    """Parse and merge Q-A files (.json or .jsonl); duplicate cluster ids across files are an error."""
    if not paths:
        raise InputError("no --qa files given", "pass one or more Q-A JSON or JSONL files")
    seen: dict[str, str] = {}
    out: list[QACluster] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise InputError(f"Q-A file {p} does not exist", "check the path")
        try:
            clusters = _parse_jsonl(p) if p.suffix == ".jsonl" else _parse_json(p, model)
        except UnicodeDecodeError:
            raise InputError(f"{p}: not UTF-8 text", "save the file as UTF-8") from None
        for c in clusters:
            if c.id in seen:
                raise InputError(f"duplicate cluster id {c.id!r} in {p} (also in {seen[c.id]})",
                                 "give every cluster a unique id")
            seen[c.id] = str(p)
            out.append(c)
    return out


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def build_teacher(clusters: list[QACluster], embed_fn, *, temperature: float = 0.1, holdout_per_cluster: int = 2,
                  seed: int = 0, model: str = "all-MiniLM-L6-v2", name: str = "teacher") -> Teacher:
    """Embed, split and build.  ``embed_fn(texts) -> (n, d) float32`` unit vectors."""
    if holdout_per_cluster < 0:
        raise InputError(f"--holdout-per-cluster {holdout_per_cluster} < 0", "pass 0 or more")
    q_texts = [t for c in clusters for _, t in c.queries]
    a_texts = [t for c in clusters for t in c.answers]
    vecs = np.asarray(embed_fn(q_texts + a_texts), np.float32)
    qv, av = vecs[: len(q_texts)], vecs[len(q_texts):]
    rng = np.random.default_rng(seed)
    cents, answers, tr, tr_l, ho, ho_l = [], [], [], [], [], []
    qi = ai = 0
    for label, c in enumerate(clusters):
        n = len(c.queries)
        if n < 1 + holdout_per_cluster:
            raise InputError(f"{c.source}: cluster {c.id!r} has {n} queries; {holdout_per_cluster} held out "
                             "leaves none to build its centroid", "add queries or lower --holdout-per-cluster")
        own = qv[qi: qi + n]
        perm = rng.permutation(n)
        held, train = perm[:holdout_per_cluster], np.sort(perm[holdout_per_cluster:])
        cents.append(_normalize(own[train].mean(axis=0)))
        answers.append(_normalize(av[ai: ai + len(c.answers)].mean(axis=0)))
        tr.append(own[train])
        tr_l += [label] * len(train)
        ho.append(own[np.sort(held)])
        ho_l += [label] * len(held)
        qi += n
        ai += len(c.answers)
    d = qv.shape[1]
    qs = QuerySet(np.concatenate(tr), np.array(tr_l, np.int64),
                  np.concatenate(ho) if ho_l else np.zeros((0, d), np.float32), np.array(ho_l, np.int64))
    return make_teacher(np.stack(cents), np.stack(answers), temperature, [c.id for c in clusters],
                        name=name, embedding_model=model, queries=qs,
                        answer_texts=[c.answers[0] for c in clusters])  # the cluster's (first) answer text


def retrieval_quality(teacher: Teacher, queries: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Recall@1 and MRR of the true cluster on held-out queries.

    (a) ``plain_cosine``: rank answers by cosine with the query; (b) ``projection``:
    rank answers by cosine with the projected query; (c) ``routing``: rank heads
    by routing weight (nearest centroid).
    """
    a = _normalize(teacher.answers.astype(np.float64))
    projected, weights = teacher.project(queries)
    out = {}
    for method, x in (("plain_cosine", queries), ("projection", projected), ("routing", None)):
        scores = weights.astype(np.float64) if x is None else _normalize(np.asarray(x, np.float64)) @ a.T
        true = scores[np.arange(len(labels)), labels]
        rank = 1 + (scores > true[:, None]).sum(axis=1)
        out[method] = {"recall_at_1": float((rank == 1).mean()), "mrr": float((1.0 / rank).mean()),
                       "n": int(len(labels))}
    return out
