"""Tests for data spec dispatch (`load_rows`) and the `data validate` / `data synth` subcommands."""

from __future__ import annotations

import argparse
import json

import pytest

from llm_unlearn.config import DataConfig
from llm_unlearn.data.commands import add_data_parser
from llm_unlearn.data.sources import load_rows
from llm_unlearn.errors import DataError


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="llm-unlearn")
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_rows_dispatch(tmp_path):
    path = _jsonl(tmp_path / "f.jsonl", [{"q": "Who?", "a": "Me."}])
    rows = load_rows(str(path), DataConfig(question_key="q", answer_key="a"))
    assert rows == [{"question": "Who?", "answer": "Me.", "source": f"{path}:1"}]
    with pytest.raises(DataError, match="unknown prefix 'hf:'"):
        load_rows("hf:locuslab/TOFU")
    with pytest.raises(DataError, match="missing.jsonl: no such file or folder"):
        load_rows(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="synth:forgt: no such split .* Did you mean 'synth:forget'"):
        load_rows("synth:forgt")


def test_validate_prints_summary(tmp_path, capsys):
    forget = _jsonl(
        tmp_path / "forget.jsonl", [{"question": "q1", "answer": "a1"}] * 2 + [{"question": "q2", "answer": "a2"}]
    )
    retain = _jsonl(tmp_path / "retain.jsonl", [{"question": "q2", "answer": "a2"}, {"question": "r", "answer": "b"}])
    assert _run(["data", "validate", str(forget), "--retain", str(retain)]) == 0
    out = capsys.readouterr().out
    assert "forget: 2 rows" in out and "duplicates removed: 1" in out
    assert "retain: 1 rows" in out and "overlaps removed from retain: 1" in out
    assert "fingerprint: sha256:" in out


def test_validate_counts_tokens_with_a_tokenizer(tmp_path, capsys, smollm2_dir, tokenizer):
    forget = _jsonl(tmp_path / "forget.jsonl", [{"question": "Hi?", "answer": "Hello there."}])
    png = tmp_path / "lengths.png"
    argv = ["data", "validate", str(forget), "--tokenizer", str(smollm2_dir), "--max-length", "64", "--plot", str(png)]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"token-length histogram: {png}" in out
    from llm_unlearn.data.collate import PromptFormatter

    formatter = PromptFormatter(tokenizer, max_length=64)
    expected = len(formatter.prompt_ids("Hi?")) + len(formatter.answer_ids("Hello there."))
    assert f"forget: 1 rows, {expected} tokens (longest {expected}), 0 over max_length=64" in out


def test_validate_exits_non_zero_on_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{"question": "q2"}\n', encoding="utf-8")
    assert _run(["data", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{bad}, line 2: missing field 'answer'" in err
    assert _run(["data", "validate", str(bad), "--answer-key", "question"]) == 1
    assert "question and answer columns must differ, both are 'question'" in capsys.readouterr().err
    assert _run(["data", "validate", str(bad), "--plot", str(tmp_path / "x.png")]) == 1
    assert "--plot needs --tokenizer" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    capsys.readouterr()
    assert _run(["data", "validate", str(empty)]) == 1
    assert "the forget set is empty" in capsys.readouterr().err


def test_synth_command_writes_a_loadable_set(tmp_path, capsys):
    out = tmp_path / "set"
    assert _run(["data", "synth", "--authors", "5", "--seed", "3", "--out", str(out), "--forget-pct", "20"]) == 0
    assert "wrote 10 files" in capsys.readouterr().out
    assert len(load_rows("tofu:forget", DataConfig(tofu_dir=str(out)))) == 10
    assert _run(["data", "synth", "--authors", "5", "--out", str(out)]) == 1  # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err
    assert (
        _run(
            ["data", "synth", "--authors", "5", "--seed", "3", "--out", str(out), "--forget-pct", "20", "--overwrite"]
        )
        == 0
    )
