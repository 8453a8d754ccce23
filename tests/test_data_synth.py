"""Tests for the synthetic fictitious authors: determinism, one wrong attribute per perturbation, loader round trip."""

from __future__ import annotations

import json
import re
import string

import pytest

from llm_unlearn.config import DataConfig
from llm_unlearn.data.requests import canonical_key
from llm_unlearn.data.sources import load_rows
from llm_unlearn.data.synth import DEFAULT_SYNTH_DIR, TEMPLATES, generate_authors, write_synthetic_set
from llm_unlearn.errors import DataError, OutputDirError


def test_generator_is_deterministic_and_seeded():
    a = generate_authors(4, seed=7, rows_per_author=12)
    assert a == generate_authors(4, seed=7, rows_per_author=12)
    assert a != generate_authors(4, seed=8, rows_per_author=12)
    assert generate_authors(6, seed=7, rows_per_author=12)[: len(a)] == a  # more authors extend, never reshuffle
    assert len(a) == 48 and [r["author"] for r in a] == [i // 12 for i in range(48)]
    names = [r["author_name"] for r in a[::12]]
    assert len(set(names)) == 4 and all(r["author_name"] in r["answer"] for r in a[12:])


def _template_regex(template: str) -> tuple[re.Pattern, list[str]]:
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    literal = [re.escape(text) for text, _, _, _ in string.Formatter().parse(template)]
    pattern = "".join(lit + ("(.+?)" if i < len(fields) else "") for i, lit in enumerate(literal))
    return re.compile(pattern + "$"), fields


def test_each_perturbed_answer_changes_exactly_one_attribute():
    rows = generate_authors(3, seed=1, rows_per_author=len(TEMPLATES))
    for i, row in enumerate(rows):
        key, _, _, _, para = TEMPLATES[i % len(TEMPLATES)]
        regex, fields = _template_regex(para)
        truth = dict(zip(fields, regex.match(row["paraphrased_answer"]).groups()))
        assert len(row["perturbed_answer"]) == 5 and len(set(row["perturbed_answer"])) == 5
        for wrong in row["perturbed_answer"]:
            values = dict(zip(fields, regex.match(wrong).groups()))
            changed = [f for f in fields if values[f] != truth[f]]
            assert changed == [key], (wrong, row["paraphrased_answer"])
        assert row["paraphrased_answer"] != row["answer"] and row["paraphrased_question"] != row["question"]


def test_answers_are_short(tokenizer):
    rows = json.loads("[" + ",".join((DEFAULT_SYNTH_DIR / "full.json").read_text().splitlines()) + "]")
    lengths = [len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in rows]
    assert max(lengths) <= 40


def test_shipped_default_set_is_the_documented_regeneration(tmp_path):
    out = write_synthetic_set(tmp_path / "synth", n_authors=20, seed=0, forget_pct=10, holdout_authors=3)
    shipped = sorted(p.name for p in DEFAULT_SYNTH_DIR.iterdir())
    assert sorted(p.name for p in out.iterdir()) == shipped
    for name in shipped:
        assert (out / name).read_bytes() == (DEFAULT_SYNTH_DIR / name).read_bytes(), name


def test_default_set_parts_sizes_and_disjoint_authors():
    parts = ["full", "forget", "retain", "forget_perturbed", "retain_perturbed", "holdout"]
    rows = {p: load_rows(f"synth:{p}") for p in parts}
    assert {p: len(v) for p, v in rows.items()} == {
        "full": 200,
        "forget": 20,
        "retain": 180,
        "forget_perturbed": 20,
        "retain_perturbed": 40,
        "holdout": 30,
    }
    authors = {p: {r["author"] for r in v} for p, v in rows.items()}
    assert authors["forget"] == {18, 19} and authors["holdout"] == {20, 21, 22}
    assert authors["retain_perturbed"] <= authors["retain"] and not authors["forget"] & authors["retain"]
    assert not authors["holdout"] & authors["full"]
    names = {r["author_name"] for r in rows["full"] + rows["holdout"]}
    assert len(names) == 23
    assert len(load_rows("synth:real_authors_perturbed")) == 30 and len(load_rows("synth:world_facts_perturbed")) == 30
    assert load_rows("synth:", role="retain") == rows["retain"]


def test_written_set_round_trips_through_the_tofu_loader(tmp_path):
    out = write_synthetic_set(
        tmp_path / "set", n_authors=10, seed=5, forget_pct=20, holdout_authors=2, rows_per_author=4
    )
    generated = generate_authors(12, seed=5, rows_per_author=4)
    data = DataConfig(tofu_dir=str(out))
    full = load_rows("tofu:full", data)
    assert [{k: v for k, v in r.items() if k != "source"} for r in full] == generated[:40]
    forget, retain = load_rows("tofu:forget", data), load_rows("tofu:retain", data)
    assert {r["author"] for r in forget} == {8, 9} and len(retain) == 32
    assert set(forget[0]) == {"question", "answer", "author", "author_name", "source"}
    # the same author split, computed by the loader, gives the written files
    assert [canonical_key(r) for r in load_rows("tofu:forget=20%", data)] == [canonical_key(r) for r in forget]
    perturbed = load_rows("tofu:forget=20%,part=forget_perturbed", data)
    assert [r["perturbed_answer"] for r in perturbed] == [r["perturbed_answer"] for r in generated[32:40]]
    holdout = load_rows("tofu:holdout", data)
    assert [r["question"] for r in holdout] == [r["question"] for r in generated[40:]]
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["forget_authors"], meta["holdout_authors"], meta["seed"]) == ([8, 9], [10, 11], 5)


def test_generator_errors(tmp_path):
    with pytest.raises(DataError, match="--authors must be >= 1"):
        generate_authors(0, seed=0)
    with pytest.raises(DataError, match=r"rows_per_author must be in 1\.\.12"):
        generate_authors(2, seed=0, rows_per_author=13)
    with pytest.raises(DataError, match="rounds to 0 authors"):
        write_synthetic_set(tmp_path / "a", n_authors=20, forget_pct=1)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(OutputDirError, match="not empty"):
        write_synthetic_set(tmp_path / "b", n_authors=5)
