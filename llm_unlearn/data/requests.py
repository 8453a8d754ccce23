"""Users' forget requests: read JSONL/JSON/CSV/Parquet/save_to_disk files into rows, validate, fingerprint.

Holds file reading and checks only; no TOFU split logic (tofu.py) and no tokenization for training (collate.py).
A row is a dict with `question` and `answer` (or `text` for raw passages), the optional TOFU fields
`paraphrased_question`, `paraphrased_answer`, `perturbed_answer` (list of str), any other columns as given,
and `source` = "FILE:N" where N is the 1-based line (JSONL, JSON, CSV) or row (Parquet, save_to_disk).
Every error names the file, the line or row, and the field.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_unlearn.errors import DataError

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_SAVE_TO_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_OPTIONAL_STR_FIELDS = ("paraphrased_question", "paraphrased_answer")
_FINGERPRINT_VERSION = "llm-unlearn-forget-set-v1"


# --------------------------------------------------------------------------------------------
# Reading raw records
# --------------------------------------------------------------------------------------------


def _decode(path: Path) -> str:
    """Read `path` as UTF-8 (a BOM is accepted); a bad byte becomes a DataError naming its line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-save the file with UTF-8 encoding"
        ) from None


def _jsonl_items(text: str, path: Path) -> list[tuple[int, Any]]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}, line {number}: malformed JSON ({exc.msg} at column {exc.colno}); "
                "JSON Lines files need one complete object per line"
            ) from None
    return items


def _json_array_items(text: str, path: Path) -> list[tuple[int, Any]]:
    """Decode a JSON array element by element so each record keeps the line it starts on."""
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def fail(i: int, msg: str) -> DataError:
        return DataError(f"{path}, line {text.count(chr(10), 0, i) + 1}: malformed JSON ({msg})")

    i = skip(text.index("[") + 1)
    items: list[tuple[int, Any]] = []
    if i < len(text) and text[i] == "]":
        i += 1
    else:
        while True:
            try:
                obj, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise fail(exc.pos, exc.msg) from None
            items.append((text.count("\n", 0, i) + 1, obj))
            i = skip(end)
            if i < len(text) and text[i] == ",":
                i = skip(i + 1)
                continue
            if i < len(text) and text[i] == "]":
                i += 1
                break
            raise fail(i, "expected ',' or ']' after a record")
    if skip(i) != len(text):
        raise fail(skip(i), "extra data after the closing ']'")
    return items


def _csv_items(text: str, path: Path) -> list[tuple[int, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        items = []
        start = reader.line_num + 1
        for values in reader:
            if not any(v.strip() for v in values):
                start = reader.line_num + 1
                continue
            if len(values) != len(header):
                raise DataError(
                    f"{path}, line {start}: {len(values)} value(s) but the header has {len(header)} column(s)"
                )
            items.append((start, dict(zip(header, values))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    return items


def _parquet_items(path: Path) -> list[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types; all mean "not readable"
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    return list(enumerate(rows, start=1))


def _save_to_disk_items(path: Path) -> list[tuple[int, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises FileNotFoundError, ValueError, ...
        raise DataError(f"{path}: not a readable datasets.save_to_disk folder ({exc})") from None
    if isinstance(dataset, DatasetDict):
        if "train" in dataset:
            dataset = dataset["train"]
        elif len(dataset) == 1:
            dataset = next(iter(dataset.values()))
        else:
            raise DataError(f"{path}: a DatasetDict with splits {sorted(dataset)}; save the one split to use")
    return list(enumerate(dataset.to_list(), start=1))


def read_raw(path: str | Path) -> tuple[list[tuple[int, Any]], str]:
    """Read a file or save_to_disk folder into `(number, record)` pairs and the word for `number`.

    `.json` files holding a JSON array are read as one array, anything else as JSON Lines (the TOFU
    files are JSON Lines despite their suffix).

    Returns:
        The records with their 1-based line (JSONL, JSON, CSV) or row (Parquet, folders), and "line" or "row".

    Raises:
        DataError: missing file, unsupported suffix, bad encoding or malformed content, naming the line.
    """
    path = Path(path)
    if path.is_dir():
        if not any((path / marker).exists() for marker in _SAVE_TO_DISK_MARKERS):
            raise DataError(
                f"{path}: a folder that is not a datasets.save_to_disk folder (no {' / '.join(_SAVE_TO_DISK_MARKERS)})"
            )
        return _save_to_disk_items(path), "row"
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if suffix == ".parquet":
        return _parquet_items(path), "row"
    text = _decode(path)
    if suffix == ".csv":
        return _csv_items(text, path), "line"
    if suffix == ".json" and text.lstrip().startswith("["):
        return _json_array_items(text, path), "line"
    return _jsonl_items(text, path), "line"


# --------------------------------------------------------------------------------------------
# Records -> rows
# --------------------------------------------------------------------------------------------


def _type_word(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _check_text(value: Any, key: str, where: str) -> str:
    if value is None:
        raise DataError(f"{where}: field '{key}' is null")
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{key}' must be a string, got {_type_word(value)} ({value!r:.40})")
    if not value.strip():
        raise DataError(f"{where}: field '{key}' is empty")
    return value


def _check_perturbed(value: Any, where: str) -> list[str]:
    if isinstance(value, str) and value.lstrip().startswith("["):  # a CSV cell holding a JSON list
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field 'perturbed_answer' must be a non-empty list of strings, got {value!r:.60}")
    return [_check_text(v, f"perturbed_answer[{i}]", where) for i, v in enumerate(value)]


def normalize_record(
    obj: Any,
    where: str,
    source: str,
    question_key: str = "question",
    answer_key: str = "answer",
    text_key: str | None = None,
) -> dict[str, Any]:
    """Check one record and map its columns to `question`/`answer` (or `text`).

    Args:
        obj: the decoded record.
        where: how errors name it, e.g. "forget.jsonl, line 3".
        source: the row's `source` field, e.g. "forget.jsonl:3".
        question_key, answer_key: the columns holding the pair.
        text_key: the column holding a raw passage; when set, the pair columns are not required.

    Raises:
        DataError: not an object, missing/null/empty/non-string field, malformed perturbed answers.
    """
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object with named fields, got {_type_word(obj)} ({obj!r:.40})")
    mapping = {text_key: "text"} if text_key else {question_key: "question", answer_key: "answer"}
    row = {k: v for k, v in obj.items() if k not in mapping}
    for key, target in mapping.items():
        if key not in obj:
            present = ", ".join(repr(k) for k in obj) or "none"
            close = difflib.get_close_matches(key, [str(k) for k in obj], n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            option = "text_key" if target == "text" else f"{target}_key"
            raise DataError(
                f"{where}: missing field '{key}' (fields present: {present}){hint} "
                f"- set data.{option} / --{option.replace('_', '-')} to the column holding the {target}"
            )
        row[target] = _check_text(obj[key], key, where)
    for key in _OPTIONAL_STR_FIELDS:
        if key in row and row[key] is not None:
            _check_text(row[key], key, where)
    if row.get("perturbed_answer") is not None:
        row["perturbed_answer"] = _check_perturbed(row["perturbed_answer"], where)
    row["source"] = source
    return row


def records_to_rows(
    items: Iterable[tuple[int, Any]],
    name: str,
    unit: str = "line",
    question_key: str = "question",
    answer_key: str = "answer",
    text_key: str | None = None,
) -> list[dict[str, Any]]:
    """Normalize `(number, record)` pairs from `name` (see `normalize_record`).

    When `text_key` is None and the first record has a `text` field but no `question_key`, the file
    is read as raw passages (`text_key="text"`).
    """
    if text_key is None and question_key == answer_key:
        raise DataError(f"{name}: question and answer columns must differ, both are '{question_key}'")
    items = list(items)
    if text_key is None and items and isinstance(items[0][1], dict):
        first = items[0][1]
        if question_key not in first and "text" in first:
            text_key = "text"
    return [
        normalize_record(obj, f"{name}, {unit} {n}", f"{name}:{n}", question_key, answer_key, text_key)
        for n, obj in items
    ]


def read_records(
    path: str | Path, question_key: str = "question", answer_key: str = "answer", text_key: str | None = None
) -> list[dict[str, Any]]:
    """Read and check a user's file or save_to_disk folder into rows (see the module docstring).

    Raises:
        DataError: naming the file, line/row and field of the first problem.
    """
    items, unit = read_raw(path)
    return records_to_rows(items, str(path), unit, question_key, answer_key, text_key)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def canonical_key(row: dict[str, Any]) -> tuple[str, ...]:
    """The identity of a row: NFC-normalized, whitespace-collapsed (question, answer) or ("text", passage)."""
    if "question" in row:
        return (_norm(row["question"]), _norm(row["answer"]))
    return ("text", _norm(row["text"]))


def fingerprint(rows: Iterable[dict[str, Any]]) -> str:
    """sha256 hex digest of a canonicalized forget set, for manifests and model cards.

    Order-independent: each row becomes the compact JSON of its `canonical_key` (question and answer,
    or the passage, after NFC normalization and whitespace collapsing); the lines are sorted and hashed
    under a version tag. Duplicates count (a multiset). Other columns (`source`, `author`, perturbed
    answers) do not enter the hash, so moving or reformatting the file keeps the fingerprint.
    """
    lines = sorted(json.dumps(list(canonical_key(r)), ensure_ascii=False, separators=(",", ":")) for r in rows)
    return hashlib.sha256("\n".join([_FINGERPRINT_VERSION, *lines]).encode("utf-8")).hexdigest()


@dataclass
class ValidationReport:
    """What `validate_forget_retain` found and changed. Token fields are None (lengths empty) without a tokenizer."""

    forget_rows: int = 0
    retain_rows: int = 0
    forget_duplicates: int = 0
    retain_duplicates: int = 0
    overlaps_removed: int = 0
    question_overlaps: int = 0
    forget_tokens: int | None = None
    retain_tokens: int | None = None
    forget_over_long: int = 0
    retain_over_long: int = 0
    max_tokens: int | None = None
    max_length: int | None = None
    fingerprint: str = ""
    warnings: list[str] = field(default_factory=list)
    forget_lengths: list[int] = field(default_factory=list, repr=False)
    retain_lengths: list[int] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        """A few human-readable lines for `llm-unlearn data validate`."""
        lines = [f"forget: {self.forget_rows} rows" + _tokens(self.forget_tokens, self.forget_over_long, self)]
        lines.append(f"  duplicates removed: {self.forget_duplicates}")
        lines.append(f"  fingerprint: sha256:{self.fingerprint}")
        if self.retain_rows or self.overlaps_removed or self.retain_duplicates:
            lines.append(f"retain: {self.retain_rows} rows" + _tokens(self.retain_tokens, self.retain_over_long, self))
            lines.append(f"  duplicates removed: {self.retain_duplicates}")
            lines.append(f"  forget/retain overlaps removed from retain: {self.overlaps_removed}")
            lines.append(f"  retain questions also in forget (different answer, kept): {self.question_overlaps}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def _tokens(total: int | None, over_long: int, report: ValidationReport) -> str:
    if total is None:
        return ""
    return f", {total} tokens (longest {report.max_tokens}), {over_long} over max_length={report.max_length}"


def _dedupe(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[dict, dict]]]:
    seen: dict[tuple[str, ...], dict[str, Any]] = {}
    kept, dropped = [], []
    for row in rows:
        key = canonical_key(row)
        if key in seen:
            dropped.append((row, seen[key]))
        else:
            seen[key] = row
            kept.append(row)
    return kept, dropped


def _count_tokens(rows: Sequence[dict[str, Any]], formatter: Any) -> tuple[list[int], int]:
    """(token length of each row under the trainer's formatting, rows over max_length)."""
    lengths, over = [], 0
    for row in rows:
        where = row.get("source", "row")
        if "question" in row:
            n = len(formatter.prompt_ids(row["question"])) + len(formatter.answer_ids(row["answer"]))
            if n > formatter.max_length:
                formatter.encode(row["question"], row["answer"], where)  # raises when truncation="error"
                over += 1
        else:
            n = len(formatter.tokenizer(row["text"], add_special_tokens=False)["input_ids"])
        lengths.append(n)
    return lengths, over


def validate_forget_retain(
    forget: Sequence[dict[str, Any]],
    retain: Sequence[dict[str, Any]] | None = None,
    *,
    tokenizer: Any = None,
    max_length: int = 256,
    truncation: str = "warn",
    template: str | None = None,
    forget_name: str = "forget set",
    retain_name: str = "retain set",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], ValidationReport]:
    """Check a forget set (and optional retain set) before training.

    Steps:
        1. An empty forget set is an error.
        2. Exact duplicates (see `canonical_key`) are counted and removed from each set, keeping the first.
        3. Retain rows identical to a forget row are removed from retain (otherwise the retain loss
           re-teaches what we forget) and counted; retain rows asking a forget question with another
           answer are only counted.
        4. With a tokenizer: tokens are counted under the trainer's prompt formatting; rows longer than
           `max_length` are counted (the collator truncates them) or raise with `truncation="error"`.
           Text passages are chunked by the collator and never over-long.

    Returns:
        (forget rows, retain rows, report); each change also emits a `UserWarning`.

    Raises:
        DataError: empty forget set, or an over-long row with `truncation="error"` (naming its source).
    """
    if not forget:
        raise DataError(f"{forget_name}: the forget set is empty; nothing to unlearn")
    report = ValidationReport(max_length=max_length if tokenizer is not None else None)

    def warn(message: str) -> None:
        report.warnings.append(message)
        warnings.warn(message, stacklevel=3)

    forget_rows, dropped = _dedupe(forget)
    report.forget_duplicates = len(dropped)
    if dropped:
        row, first = dropped[0]
        warn(
            f"{forget_name}: {len(dropped)} duplicate row(s) removed "
            f"(e.g. {row.get('source', '?')} repeats {first.get('source', '?')})"
        )
    retain_rows, dropped = _dedupe(retain or [])
    report.retain_duplicates = len(dropped)
    if dropped:
        warn(f"{retain_name}: {len(dropped)} duplicate row(s) removed")

    forget_keys = {canonical_key(r) for r in forget_rows}
    forget_questions = {_norm(r["question"]) for r in forget_rows if "question" in r}
    overlapping = [r for r in retain_rows if canonical_key(r) in forget_keys]
    if overlapping:
        retain_rows = [r for r in retain_rows if canonical_key(r) not in forget_keys]
        report.overlaps_removed = len(overlapping)
        warn(
            f"{retain_name}: {len(overlapping)} row(s) also in the forget set removed from retain "
            f"(e.g. {overlapping[0].get('source', '?')})"
        )
    report.question_overlaps = sum(
        1 for r in retain_rows if "question" in r and _norm(r["question"]) in forget_questions
    )
    if report.question_overlaps:
        warn(f"{retain_name}: {report.question_overlaps} row(s) ask a forget question with a different answer (kept)")

    if tokenizer is not None:
        from llm_unlearn.data.collate import PromptFormatter

        formatter = PromptFormatter(tokenizer, template, max_length=max_length, truncation=truncation)
        report.forget_lengths, report.forget_over_long = _count_tokens(forget_rows, formatter)
        report.retain_lengths, report.retain_over_long = _count_tokens(retain_rows, formatter)
        report.forget_tokens, report.retain_tokens = sum(report.forget_lengths), sum(report.retain_lengths)
        report.max_tokens = max(report.forget_lengths + report.retain_lengths)
        for name, count in ((forget_name, report.forget_over_long), (retain_name, report.retain_over_long)):
            if count:
                warn(f"{name}: {count} row(s) longer than max_length={max_length} tokens will be truncated")

    report.forget_rows, report.retain_rows = len(forget_rows), len(retain_rows)
    report.fingerprint = fingerprint(forget_rows)
    return forget_rows, retain_rows, report


__all__ = [
    "SUPPORTED_SUFFIXES",
    "ValidationReport",
    "canonical_key",
    "fingerprint",
    "normalize_record",
    "read_raw",
    "read_records",
    "records_to_rows",
    "validate_forget_retain",
]
