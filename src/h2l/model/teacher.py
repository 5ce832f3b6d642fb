"""The teacher: keys, routing and heads, validated once (files: h2l.importers.npz; arithmetic: .projection).

    y = Σ_h α_h(q) · (q · W_h + b_h),   α = key weights softmax(q̂ · K / τ) (maybe top-k), summed per head

Today's flat LDA teacher is the case W = 0, b = answers, one key per head, h2l's
scoring, all keys: ``softmax(q̂ · Ĉᵀ / τ) · A``.  For that case everything here
(arrays, fingerprint, files) is exactly what it was before the general form
existed; the general fields only add to the fingerprint and the file when used.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .projection import NORM_EPS, Routing, Scoring, check_queries, project_arrays, project_general
from .teacher_checks import (
    check_dead_heads,
    check_head_weights,
    check_key_heads,
    check_query_arrays,
    check_routing,
    check_scoring,
    check_targets_arrays,
    check_temperature,
    float_array,
)

__all__ = ["NORM_EPS", "QuerySet", "Routing", "Scoring", "Targets", "Teacher", "check_queries", "make_teacher",
           "project_arrays", "require_flat"]


@dataclass(frozen=True, eq=False)  # holds arrays: a generated __eq__ would raise on them; compare fingerprints
class QuerySet:
    """Embedded user queries stored with a teacher, split by cluster.

    Labels are row indices into the teacher's heads.  Held-out rows are never
    shown to the distillation sampler; they measure fidelity on unseen queries.
    """

    train: np.ndarray
    train_labels: np.ndarray
    heldout: np.ndarray
    heldout_labels: np.ndarray

    @property
    def empty(self) -> bool:
        return len(self.train) == 0 and len(self.heldout) == 0


@dataclass(frozen=True, eq=False)
class Targets:
    """What ``ask`` ranks by cosine with the projection (federated models: every training row's target)."""

    embeddings: np.ndarray  # (T, d) float32, no zero row
    ids: tuple[str, ...]
    titles: tuple[str, ...]


@dataclass(frozen=True, eq=False)  # holds arrays: `==` is identity; compare content with fingerprint()
class Teacher:
    """A validated teacher.  Build it with :func:`make_teacher`."""

    centroids: np.ndarray  # the keys as stored, (N_k, d) float32
    answers: np.ndarray  # b, (H, d) float32 (zero rows for affine heads without a bias)
    temperature: float
    cluster_ids: tuple[str, ...]  # one per head
    name: str = "teacher"
    embedding_model: str = ""
    queries: QuerySet | None = field(default=None, compare=False)
    #: one answer text per head (teachers built from Q-A text); None for vector-only teachers (lda.db)
    answer_texts: tuple[str, ...] | None = field(default=None, compare=False)
    head_weights: np.ndarray | None = None  # W, (H, d, d) float32, applied as q · W_h to the raw query
    key_heads: np.ndarray | None = None  # (N_k,) int64 head of each key; None: key j is head j
    scoring: Scoring = Scoring()
    routing: Routing = Routing()
    normalize_output: bool = False
    targets: Targets | None = None

    @property
    def n_keys(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.answers.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def is_affine(self) -> bool:
        return self.head_weights is not None

    @property
    def head_kind(self) -> str:
        return "affine" if self.is_affine else "answer"

    @property
    def is_flat(self) -> bool:
        """Today's family (format_version 1): every stage of h2l supports it."""
        return not self.general_features()

    def _flat_math(self) -> bool:
        """The flat family's function (targets change what ``ask`` ranks, not the projection)."""
        return (self.head_weights is None and self.key_heads is None and self.scoring.is_default
                and self.routing.is_default and not self.normalize_output)

    def general_features(self) -> list[str]:
        """What this teacher uses beyond the flat family, in words (empty for a flat teacher)."""
        out = []
        if self.head_weights is not None:
            out.append(f"affine heads ({self.n_heads} d × d matrices)")
        if self.key_heads is not None:
            out.append(f"{self.n_keys} keys sharing {self.n_heads} heads")
        if not self.scoring.is_default:
            out.append(f"scoring {self.scoring.describe()}")
        if not self.routing.is_default:
            out.append(f"routing {self.routing.describe()}")
        if self.normalize_output:
            out.append("a normalised output")
        if self.targets is not None:
            out.append(f"{len(self.targets.ids)} targets")
        return out

    @functools.cached_property
    def keys(self) -> np.ndarray:
        """K = (normalize_keys ? Ĉ : C)ᵀ/τ as float32 (d, N_k): the matrix both numpy and ONNX multiply by."""
        c = self.centroids.astype(np.float64)
        if self.scoring.normalize_keys:
            c = c / np.linalg.norm(c, axis=1, keepdims=True)
        return np.ascontiguousarray((c / self.temperature).T.astype(np.float32))

    def project(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (projected [B, d], routing weights [B, N_k]) for q of shape (d,) or (B, d)."""
        q2 = check_queries(q, self.dim)
        if self._flat_math():
            return project_arrays(q2, self.keys, self.answers)
        return project_general(q2, self.keys, self.answers, head_weights=self.head_weights,
                               key_heads=self.key_heads, scoring=self.scoring, routing=self.routing,
                               normalize_output=self.normalize_output)

    def fingerprint(self) -> str:
        """sha256 over the teacher's content (not its file), recorded by students and bundles.

        The flat family hashes exactly what it always did; any general field adds a
        tagged section, so two teachers that compute different functions never share one.
        """
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.centroids, "<f4").tobytes())
        h.update(np.ascontiguousarray(self.answers, "<f4").tobytes())
        h.update(repr(float(self.temperature)).encode())
        h.update("\x00".join(self.cluster_ids).encode())
        if self.is_flat:
            return h.hexdigest()
        h.update(b"\x00h2l.teacher.v2\x00")
        for tag, part in self._general_parts():
            h.update(f"\x00{tag}\x00".encode())
            h.update(part)
        return h.hexdigest()

    def _general_parts(self) -> list[tuple[str, bytes]]:
        s, r, t = self.scoring, self.routing, self.targets
        parts = [("scoring", f"{s.query_norm}|{float(s.eps)!r}|{int(s.normalize_keys)}".encode()),
                 ("routing", f"{r.top_k}|{int(r.renormalize)}".encode()),
                 ("normalize_output", str(int(self.normalize_output)).encode())]
        if self.head_weights is not None:
            parts.append(("head_weights", np.ascontiguousarray(self.head_weights, "<f4").tobytes()))
        if self.key_heads is not None:
            parts.append(("key_heads", np.ascontiguousarray(self.key_heads, "<i8").tobytes()))
        if t is not None:
            parts += [("target_embeddings", np.ascontiguousarray(t.embeddings, "<f4").tobytes()),
                      ("target_ids", "\x00".join(t.ids).encode()), ("target_titles", "\x00".join(t.titles).encode())]
        return parts

    def _rebuild(self, **changes) -> "Teacher":
        kw: dict[str, Any] = dict(name=self.name, embedding_model=self.embedding_model, queries=self.queries,
                  answer_texts=self.answer_texts, head_weights=self.head_weights, key_heads=self.key_heads,
                  scoring=self.scoring, routing=self.routing, normalize_output=self.normalize_output,
                  targets=self.targets)
        kw.update(changes)
        return make_teacher(self.centroids, self.answers, self.temperature, self.cluster_ids, **kw)

    def with_queries(self, queries: QuerySet | None) -> "Teacher":
        return self._rebuild(queries=queries)

    def with_routing(self, top_k: int | None = None, renormalize: bool = True) -> "Teacher":
        """The same teacher routed over all keys (``top_k`` None) or the top-k; the all-key one of a
        top-k teacher is ``t.with_routing(None)``."""
        return self._rebuild(routing=Routing(top_k, renormalize if top_k is not None else True))


def require_flat(teacher: Teacher, stage: str, fix: str) -> None:
    """Refuse (exit 3) a teacher a flat-only stage would silently compute wrong, naming what it uses."""
    if not teacher.is_flat:
        raise InputError(f"{stage} supports flat answer-head teachers only, and {teacher.name} has "
                         + ", ".join(teacher.general_features()), fix)


def make_teacher(centroids, answers, temperature, cluster_ids=None, *, name: str = "teacher",
                 embedding_model: str = "", queries: QuerySet | None = None, answer_texts=None,
                 head_weights=None, key_heads=None, scoring: Scoring | None = None, routing: Routing | None = None,
                 normalize_output: bool = False, targets: Targets | None = None) -> Teacher:
    """Validate raw arrays and return a teacher; every problem is an InputError."""
    c = float_array(centroids, "centroids", "(N, d)", 2)
    a = float_array(answers, "answers", "(N, d)", 2)
    if c.shape[0] == 0 or a.shape[0] == 0:
        raise InputError("teacher has N = 0 heads", "add at least one cluster")
    if key_heads is None and c.shape != a.shape:
        raise InputError(f"centroids {c.shape} and answers {a.shape} differ in shape",
                         "give exactly one answer embedding per centroid, same d")
    if c.shape[1] != a.shape[1]:
        raise InputError(f"centroids (d = {c.shape[1]}) and answers (d = {a.shape[1]}) differ in d",
                         "use embeddings from one model for keys and heads")
    if c.shape[1] == 0:
        raise InputError("teacher has d = 0", "store non-empty embeddings")
    n_heads, d = a.shape
    sc = check_scoring(scoring)
    if sc.normalize_keys:
        zero = np.flatnonzero(np.linalg.norm(c.astype(np.float64), axis=1) == 0)
        if zero.size:
            raise InputError(f"centroid row {int(zero[0])} has zero norm",
                             "drop that head or recompute its centroid")
    tau = check_temperature(temperature, c)
    kh = check_key_heads(key_heads, c.shape[0], n_heads)
    w = check_head_weights(head_weights, n_heads, d)
    check_dead_heads(a, w)
    rt = check_routing(routing, c.shape[0])
    ids = tuple(str(i) for i in (cluster_ids if cluster_ids is not None else range(n_heads)))
    if len(ids) != n_heads:
        raise InputError(f"{len(ids)} cluster ids for {n_heads} heads", "give one id per head")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"duplicate cluster id {dup!r}", "make cluster ids unique")
    if queries is not None:
        queries = QuerySet(*check_query_arrays("train", queries.train, queries.train_labels, n_heads, d),
                           *check_query_arrays("heldout", queries.heldout, queries.heldout_labels, n_heads, d))
    if answer_texts is not None:
        answer_texts = tuple(answer_texts)
        if len(answer_texts) != len(ids) or not all(isinstance(t, str) for t in answer_texts):
            raise InputError(f"{len(answer_texts)} answer texts for {len(ids)} heads (or a non-string text)",
                             "give one answer text per head, in head order")
    if targets is not None:
        targets = Targets(*check_targets_arrays(targets.embeddings, targets.ids, targets.titles, d))
    if not isinstance(normalize_output, (bool, np.bool_)):
        raise InputError(f"normalize_output {normalize_output!r} is not a bool", "pass True or False")
    return Teacher(c, a, tau, ids, name, embedding_model, queries, answer_texts, w, kh, sc, rt,
                   bool(normalize_output), targets)
