"""Tests for users' forget requests: every reader, each bad input and its message, validation, fingerprint."""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest

from llm_unlearn.data.requests import fingerprint, read_records, validate_forget_retain
from llm_unlearn.errors import DataError


def _write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _jsonl(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


QA = {"question": "Who wrote X?", "answer": "Y wrote X."}


# --------------------------------------------------------------------------------------------
# Bad inputs: each names file, line (1-based) and field
# --------------------------------------------------------------------------------------------

BAD_INPUTS = [
    # id, file name, content, expected fragments of the message
    (
        "malformed-jsonl",
        "f.jsonl",
        _jsonl(QA) + '{"question": "a", "answer": }\n',
        ["f.jsonl, line 2", "malformed JSON"],
    ),
    ("not-an-object", "f.jsonl", _jsonl(QA, QA) + '["a", "b"]\n', ["f.jsonl, line 3", "expected an object", "a list"]),
    ("missing-answer", "f.jsonl", _jsonl(QA, {"question": "q"}), ["line 2", "missing field 'answer'", "answer-key"]),
    (
        "misnamed-column",
        "f.jsonl",
        _jsonl({"question": "q", "answr": "a"}),
        ["line 1", "'answer'", "did you mean 'answr'"],
    ),
    (
        "empty-answer",
        "f.jsonl",
        _jsonl(QA, QA, QA, {"question": "q", "answer": "   "}),
        ["line 4", "'answer' is empty"],
    ),
    ("null-question", "f.jsonl", _jsonl({"question": None, "answer": "a"}), ["line 1", "'question' is null"]),
    (
        "number-answer",
        "f.jsonl",
        _jsonl({"question": "q", "answer": 42}),
        ["line 1", "'answer' must be a string", "a number"],
    ),
    (
        "perturbed-not-list",
        "f.jsonl",
        _jsonl({**QA, "perturbed_answer": "x"}),
        ["line 1", "'perturbed_answer'", "list"],
    ),
    (
        "perturbed-item-type",
        "f.jsonl",
        _jsonl({**QA, "perturbed_answer": ["x", 3]}),
        ["line 1", "perturbed_answer[1]"],
    ),
    (
        "paraphrase-empty",
        "f.jsonl",
        _jsonl({**QA, "paraphrased_answer": ""}),
        ["line 1", "'paraphrased_answer' is empty"],
    ),
    (
        "bad-utf8",
        "f.jsonl",
        _jsonl(QA).encode() + b'{"question": "caf\xe9", "answer": "a"}\n',
        ["line 2", "not valid UTF-8"],
    ),
    (
        "json-array-bad-record",
        "f.json",
        '[\n  {"question": "q", "answer": "a"},\n  {"question": "q"}\n]\n',
        ["f.json, line 3", "missing field 'answer'"],
    ),
    (
        "json-array-syntax",
        "f.json",
        '[\n  {"question": "q", "answer": "a"}\n  {"question": "q", "answer": "b"}\n]',
        ["f.json, line 3", "expected ',' or ']'"],
    ),
    ("csv-missing-column", "f.csv", "question,reply\nq,a\n", ["f.csv, line 2", "missing field 'answer'"]),
    (
        "csv-empty-cell",
        "f.csv",
        'question,answer\nq,a\n"multi\nline q",a\nq3,\n',
        ["f.csv, line 5", "'answer' is empty"],
    ),
    ("csv-ragged-row", "f.csv", "question,answer\nq,a\nq,a,extra\n", ["f.csv, line 3", "3 value(s)", "2 column(s)"]),
    ("unsupported-type", "f.txt", "question: q\n", ["f.txt", "unsupported file type '.txt'"]),
]


@pytest.mark.parametrize("name,content,fragments", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_file_line_and_field(tmp_path, name, content, fragments):
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        read_records(path)
    message = str(info.value)
    assert str(tmp_path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file_and_plain_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="not a datasets.save_to_disk folder"):
        read_records(tmp_path)


def test_text_key_missing_is_reported(tmp_path):
    path = _write(tmp_path / "p.jsonl", _jsonl({"passage": "Once upon a time"}))
    with pytest.raises(DataError, match=r"line 1: missing field 'body'.*text-key"):
        read_records(path, text_key="body")


def test_empty_forget_set_is_an_error(tmp_path):
    rows = read_records(_write(tmp_path / "empty.jsonl", "\n\n"))
    assert rows == []
    with pytest.raises(DataError, match="empty.jsonl: the forget set is empty"):
        validate_forget_retain(rows, forget_name=str(tmp_path / "empty.jsonl"))


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def test_jsonl_with_custom_keys_maps_columns_and_keeps_sources(tmp_path):
    path = _write(
        tmp_path / "f.jsonl",
        '\ufeff{"prompt": "q1", "completion": "a1", "id": 7}\n\n{"prompt": "q2", "completion": "a2"}\n',
    )
    rows = read_records(path, question_key="prompt", answer_key="completion")
    assert rows == [
        {"question": "q1", "answer": "a1", "id": 7, "source": f"{path}:1"},
        {"question": "q2", "answer": "a2", "source": f"{path}:3"},
    ]


def test_json_array_csv_parquet_and_save_to_disk_read_the_same_rows(tmp_path):
    import datasets

    pairs = [{"question": "q1", "answer": "a, with comma"}, {"question": "q2\nsecond line", "answer": "a2"}]
    _write(tmp_path / "a.json", json.dumps(pairs, indent=2))
    import csv

    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(pairs)
    dataset = datasets.Dataset.from_list(pairs)
    dataset.to_parquet(str(tmp_path / "a.parquet"))
    dataset.save_to_disk(str(tmp_path / "disk"))
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "dict"))

    expected_sources = {
        "a.json": ["a.json:2", "a.json:6"],  # the line each record starts on
        "a.csv": ["a.csv:2", "a.csv:3"],
        "a.parquet": ["a.parquet:1", "a.parquet:2"],  # rows
        "disk": ["disk:1", "disk:2"],
        "dict": ["dict:1", "dict:2"],
    }
    for name, sources in expected_sources.items():
        rows = read_records(tmp_path / name)
        assert [{"question": r["question"], "answer": r["answer"]} for r in rows] == pairs, name
        assert [r["source"] for r in rows] == [f"{tmp_path / s}" for s in sources], name


def test_text_passages_detected_and_csv_perturbed_list_decoded(tmp_path):
    rows = read_records(_write(tmp_path / "t.jsonl", _jsonl({"text": "A long passage.", "title": "T"})))
    assert rows == [{"text": "A long passage.", "title": "T", "source": f"{tmp_path / 't.jsonl'}:1"}]
    csv_text = 'question,answer,perturbed_answer\nq,a,"[""b"", ""c""]"\n'
    rows = read_records(_write(tmp_path / "p.csv", csv_text))
    assert rows[0]["perturbed_answer"] == ["b", "c"]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _rows(pairs, name="f"):
    return [{"question": q, "answer": a, "source": f"{name}:{i + 1}"} for i, (q, a) in enumerate(pairs)]


def test_duplicates_removed_from_forget_and_overlaps_from_retain():
    forget = _rows([("q1", "a1"), ("q2", "a2"), ("q1", " a1 "), ("q3", "a3"), ("q2", "a2")], "forget")
    retain = _rows([("r1", "b1"), ("q2", "a2"), ("r1", "b1"), ("q3", "other answer"), ("q1", "a1")], "retain")
    with pytest.warns(UserWarning) as caught:
        kept_f, kept_r, report = validate_forget_retain(forget, retain)
    assert [r["source"] for r in kept_f] == ["forget:1", "forget:2", "forget:4"]
    assert [r["source"] for r in kept_r] == ["retain:1", "retain:4"]
    assert (report.forget_duplicates, report.retain_duplicates, report.overlaps_removed) == (2, 1, 2)
    assert report.question_overlaps == 1  # retain:4 asks q3 with another answer: kept, counted
    assert (report.forget_rows, report.retain_rows) == (3, 2)
    messages = " | ".join(str(w.message) for w in caught)
    assert "2 duplicate row(s) removed (e.g. forget:3 repeats forget:1)" in messages
    assert "2 row(s) also in the forget set removed from retain" in messages
    assert "forget: 3 rows" in report.summary() and "overlaps removed from retain: 2" in report.summary()


def test_clean_sets_pass_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forget, retain, report = validate_forget_retain(_rows([("q", "a")]), None)
    assert (len(forget), retain, report.forget_duplicates, report.overlaps_removed) == (1, [], 0, 0)


def test_token_counts_and_over_long_rows(tokenizer):
    from llm_unlearn.data.collate import PromptFormatter

    short = ("What is 2+2?", "Four.")
    long = ("Tell me a story.", " ".join(["word"] * 80))
    formatter = PromptFormatter(tokenizer, max_length=64)
    lengths = [len(formatter.prompt_ids(q)) + len(formatter.answer_ids(a)) for q, a in (short, long)]
    assert lengths[0] < 64 < lengths[1]
    with pytest.warns(UserWarning, match="1 row\\(s\\) longer than max_length=64"):
        _, _, report = validate_forget_retain(
            _rows([short, long]), _rows([short[::-1]]), tokenizer=tokenizer, max_length=64
        )
    assert report.forget_tokens == sum(lengths)
    assert (report.forget_over_long, report.max_tokens, report.max_length) == (1, lengths[1], 64)
    with pytest.raises(DataError, match=r"f:2: \d+ tokens exceeds data.max_length=64"):
        validate_forget_retain(_rows([short, long]), tokenizer=tokenizer, max_length=64, truncation="error")


def test_fingerprint_is_order_independent_and_content_sensitive():
    rows = _rows([("q1", "a1"), ("q2", "a2"), ("q3", "a3")])
    base = fingerprint(rows)
    assert len(base) == 64 and int(base, 16) >= 0
    assert fingerprint(rows[::-1]) == base
    moved = [{**r, "source": "elsewhere:9", "author": 3, "question": "  " + r["question"]} for r in rows]
    assert fingerprint(moved) == base  # source, extra columns and outer whitespace do not count
    assert fingerprint(rows[:2]) != base
    assert fingerprint(rows + rows[:1]) != base  # a multiset: duplicates count
    assert fingerprint(_rows([("q1", "a1"), ("q2", "a2"), ("q3", "a3.")])) != base
    assert fingerprint(_rows([("q1", "a2"), ("q2", "a1"), ("q3", "a3")])) != base  # pairs, not two bags


def test_fingerprint_follows_the_documented_recipe():
    """Pinned by hand: changing the canonical form would silently change fingerprints in old manifests."""
    rows = [{"question": "Q2", "answer": "A2"}, {"question": "Qé", "answer": "A  1"}, {"text": "Some passage."}]
    lines = sorted(['["Q2","A2"]', '["Qé","A 1"]', '["text","Some passage."]'])
    expected = hashlib.sha256("\n".join(["llm-unlearn-forget-set-v1", *lines]).encode("utf-8")).hexdigest()
    assert fingerprint(rows) == expected
    assert fingerprint([{"question": "q", "answer": "a"}]) == (
        "ecf27ae56c19549548f5b94f07d71c713a343a5571d1210c16fa5ce783f501e3"
    )


def test_unreadable_parquet_and_ambiguous_dataset_dict(tmp_path):
    import datasets

    _write(tmp_path / "broken.parquet", b"PAR1 not really parquet")
    with pytest.raises(DataError, match="broken.parquet: not a readable Parquet file"):
        read_records(tmp_path / "broken.parquet")
    split = datasets.Dataset.from_list([QA])
    datasets.DatasetDict({"a": split, "b": split}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DataError, match=r"two: a DatasetDict with splits \['a', 'b'\]"):
        read_records(tmp_path / "two")
    datasets.Dataset.from_list([{"question": "q", "answer": ""}]).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"bad, row 1: field 'answer' is empty"):
        read_records(tmp_path / "bad")


def test_text_passages_are_counted_not_truncated(tmp_path, tokenizer):
    passage = "The lighthouse keeper wrote every night. " * 20
    path = _write(tmp_path / "book.jsonl", _jsonl({"body": passage}, {"body": "Short one."}))
    rows = read_records(path, text_key="body")
    assert [set(r) for r in rows] == [{"text", "source"}] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # chunked by the collator: no over-long warning
        _, _, report = validate_forget_retain(rows, tokenizer=tokenizer, max_length=32)
    n = len(tokenizer(passage, add_special_tokens=False)["input_ids"])
    assert n > 32 and report.forget_lengths == [n, len(tokenizer("Short one.")["input_ids"])]
    assert report.forget_over_long == 0 and report.forget_tokens == sum(report.forget_lengths)
