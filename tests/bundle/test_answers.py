"""answers.jsonl (bundle/answers.py): one JSON line per head, split on "\\n" only.

JSON strings may hold U+2028, U+2029 and U+0085 raw (answers_jsonl writes them so), and str.splitlines breaks
lines at all three, so an answer holding one split the file and the teacher failed its own export."""

from __future__ import annotations

import dataclasses

from h2l.bundle.answers import answers_jsonl, read_answers
from h2l.bundle.reader import open_bundle
from h2l.export import export_onnx
from h2l.model.synthetic import synthetic_teacher
from h2l.verify.checks import verify_bundle

SEPARATORS = "\u2028\u2029\x85"


def texts(n: int) -> tuple[str, ...]:
    return tuple(f"head {i}: line\u2028separator, paragraph\u2029separator, next\x85line, \v\f\x1c end"
                 for i in range(n))


def test_answers_jsonl_writes_the_separators_raw():
    data = answers_jsonl(["a", "b"], texts(2)).decode("utf-8")
    assert data.count("\n") == 2 and all(data.count(c) == 2 for c in SEPARATORS)
    assert len(data.splitlines()) > 2  # what splitlines makes of it: the trap this module avoids


def test_answers_with_line_separators_export_verify_and_read_back_intact(tmp_path):
    n = 5
    t = dataclasses.replace(synthetic_teacher(n, 16, seed=2), answer_texts=texts(n))
    export_onnx(t, tmp_path / "b")  # verifies the staged bundle before publishing it
    report = verify_bundle(tmp_path / "b", provider="cpu")
    assert [c.passed for c in report.checks if c.check == "answers_jsonl"] == [True]
    assert read_answers(open_bundle(tmp_path / "b")) == list(texts(n))
