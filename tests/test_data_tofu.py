"""Tests for TOFU-format folders: named splits of the real benchmark, author splits and their invariants, refusals."""

from __future__ import annotations

import json

import pytest

from llm_unlearn.data.requests import canonical_key
from llm_unlearn.data.sources import load_rows
from llm_unlearn.data.tofu import (
    BUILTIN_REFUSALS,
    SplitSpec,
    load_refusals,
    load_split,
    parse_split_spec,
    plan_author_split,
)
from llm_unlearn.errors import DataError

from conftest import TOFU_DIR

needs_tofu = pytest.mark.skipif(not (TOFU_DIR / "full.json").is_file(), reason="no local TOFU copy")


def _keys(rows):
    return [canonical_key(r) for r in rows]


# --------------------------------------------------------------------------------------------
# Split planning (pure)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,n_pool,forget,retain,eval_,holdout",
    [
        ("forget=10%", 200, list(range(180, 200)), list(range(180)), list(range(20)), []),
        ("forget=1%", 200, [198, 199], list(range(198)), list(range(20)), []),
        ("authors=20,forget=10%", 200, [18, 19], list(range(18)), [0, 1, 2, 3], [20, 21]),
        ("authors=10,forget=3,holdout=1,eval_authors=2", 12, [7, 8, 9], list(range(7)), [0, 1], [10]),
        ("authors=5,forget_authors=0+3", 5, [0, 3], [1, 2, 4], [1, 2, 4], []),
        ("forget=25%", 6, [4, 5], [0, 1, 2, 3], [0, 1, 2, 3], []),  # 1.5 authors rounds half up to 2
    ],
)
def test_plan_author_split(text, n_pool, forget, retain, eval_, holdout):
    split = plan_author_split(range(n_pool), parse_split_spec(text))
    assert (split.forget, split.retain, split.eval, split.holdout) == (forget, retain, eval_, holdout)
    assert not set(split.forget) & set(split.retain)
    assert not set(split.holdout) & set(split.forget + split.retain)


@pytest.mark.parametrize(
    "text,message",
    [
        ("forget=10", None),  # valid: 10 authors
        ("frogets=10%", "unknown key 'frogets'"),
        ("forget=ten%", "not a percentage"),
        ("forget=100%", "between 0% and 100%"),
        ("authors=0", "authors must be >= 1"),
        ("part=middle", "part='middle' is not one of"),
        ("forget=10%,forget_authors=1", "either forget= or forget_authors="),
        ("authors", "is not key=value"),
    ],
)
def test_parse_split_spec_errors(text, message):
    if message is None:
        assert parse_split_spec(text) == SplitSpec(forget_count=10)
    else:
        with pytest.raises(DataError, match=message):
            parse_split_spec(text)


@pytest.mark.parametrize(
    "text,message",
    [
        ("authors=300", "authors=300 but only 200"),
        ("authors=20,forget=1%", "rounds to 0 authors"),
        ("authors=20,forget=20", "leaves no forget or no retain author"),
        ("authors=20,forget_authors=5+25", r"forget_authors \[25\] are not among"),
    ],
)
def test_plan_author_split_errors(text, message):
    with pytest.raises(DataError, match=message):
        plan_author_split(range(200), parse_split_spec(text))


# --------------------------------------------------------------------------------------------
# The real benchmark
# --------------------------------------------------------------------------------------------


@needs_tofu
def test_named_tofu_splits_sizes_and_authors():
    sizes = {"full": 4000, "forget01": 40, "forget05": 200, "retain95": 3800, "retain_perturbed": 400}
    for name, size in sizes.items():
        rows = load_rows(f"tofu:{name}")
        assert len(rows) == size, name
    forget05 = load_rows("tofu:forget05")
    assert {r["author"] for r in forget05} == set(range(190, 200))
    assert forget05[0]["source"] == f"{TOFU_DIR / 'forget05.json'}:1"
    perturbed = load_rows("tofu:forget01_perturbed")
    assert perturbed[0]["author"] == 198 and len(perturbed[0]["perturbed_answer"]) == 5
    assert "Basil Mahfouz Al-Kuwaiti" in perturbed[0]["answer"]
    real = load_rows("tofu:real_authors_perturbed")
    assert len(real) == 100 and "author" not in real[0] and len(real[0]["perturbed_answer"]) == 3


@needs_tofu
@pytest.mark.parametrize("pct,forget_name,retain_name", [(1, "forget01", "retain99"), (10, "forget10", "retain90")])
def test_author_split_reproduces_the_official_tofu_splits(pct, forget_name, retain_name):
    forget = load_rows(f"tofu:forget={pct}%")  # part defaults to the role
    retain = load_rows(f"tofu:forget={pct}%", role="retain")
    assert _keys(forget) == _keys(load_rows(f"tofu:{forget_name}"))
    assert _keys(retain) == _keys(load_rows(f"tofu:{retain_name}"))
    assert not {r["author"] for r in forget} & {r["author"] for r in retain}
    official = load_rows(f"tofu:{forget_name}_perturbed")
    ours = load_rows(f"tofu:forget={pct}%,part=forget_perturbed")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "source"} for r in rows]  # noqa: E731
    assert strip(ours) == strip(official)
    retain_eval = load_rows(f"tofu:forget={pct}%,part=retain_perturbed")
    assert _keys(retain_eval) == _keys(load_rows("tofu:retain_perturbed"))


@needs_tofu
def test_subset_split_invariants_and_perturbed_coverage_error():
    rows = {p: load_rows(f"tofu:authors=20,forget=10%,part={p}") for p in ("forget", "retain", "full", "holdout")}
    assert [len(rows[p]) for p in ("forget", "retain", "full", "holdout")] == [40, 360, 400, 40]
    authors = {p: {r["author"] for r in v} for p, v in rows.items()}
    assert authors["forget"] == {18, 19} and authors["holdout"] == {20, 21}
    assert authors["full"] == authors["forget"] | authors["retain"] and not authors["forget"] & authors["retain"]
    assert not set(_keys(rows["forget"])) & set(_keys(rows["retain"]))
    with pytest.raises(DataError, match=r"author\(s\) lack .*e\.g\. author 90"):
        load_rows("tofu:authors=100,forget=10%,part=forget_perturbed")
    with pytest.raises(DataError, match="no author is left outside"):
        load_rows("tofu:forget=10%,part=holdout")
    with pytest.raises(DataError, match="the role 'eval' is not a part"):
        load_rows("tofu:forget=10%", role="eval")


def test_unknown_split_lists_the_available_ones(tmp_path):
    (tmp_path / "full.json").write_text(json.dumps({"question": "q", "answer": "a", "author": 0}) + "\n")
    with pytest.raises(DataError, match=r"tofu:ful: no such split .* available: full, .* Did you mean 'tofu:full'"):
        load_split("ful", tmp_path)


def test_hub_fallback_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataError, match=r"tofu:holdout10: not in .* locuslab/TOFU could not be loaded.*tofu_dir"):
        load_split("holdout10", tmp_path)


def test_tofu_dir_from_environment_and_missing_folder(tmp_path, monkeypatch):
    (tmp_path / "forget01.json").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    monkeypatch.setenv("LLM_UNLEARN_TOFU_DIR", str(tmp_path))
    rows = load_rows("tofu:forget01")
    assert rows == [{"question": "q", "answer": "a", "source": f"{tmp_path / 'forget01.json'}:1", "author": 199}]
    monkeypatch.setenv("LLM_UNLEARN_TOFU_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"\$LLM_UNLEARN_TOFU_DIR: .*missing is not a folder"):
        load_rows("tofu:forget01")


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


def test_load_refusals(tmp_path, monkeypatch):
    path = tmp_path / "idk.txt"
    path.write_text('I do not know.\n\n"A \\"quoted\\" refusal."\n  No idea.  \n', encoding="utf-8")
    assert load_refusals(str(path)) == ["I do not know.", 'A "quoted" refusal.', "No idea."]
    with pytest.raises(DataError, match="no such refusal file"):
        load_refusals(str(tmp_path / "missing.txt"))
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DataError, match="no non-blank line"):
        load_refusals(str(tmp_path / "blank.txt"))
    empty = tmp_path / "empty_tofu"
    empty.mkdir()
    assert load_refusals(None, tofu_dir=empty) == list(BUILTIN_REFUSALS)
    assert len(BUILTIN_REFUSALS) == 20 and len(set(BUILTIN_REFUSALS)) == 20


@needs_tofu
def test_load_refusals_finds_tofu_idontknow():
    refusals = load_refusals(None, tofu_dir=TOFU_DIR)
    assert len(refusals) == 100 and refusals[0] == "I'm not certain about that."
