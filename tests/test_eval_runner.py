"""Tests of evaluate_model / run_eval / the eval CLI on the tiny model and the shipped synthetic sets."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from llm_unlearn.config import ModelConfig, load_recipe
from llm_unlearn.data.sources import load_rows
from llm_unlearn.errors import ConfigError, DataError, OutputDirError
from llm_unlearn.eval.runner import EvalRecipe, add_eval_parser, evaluate_model, load_result, run_eval
from llm_unlearn.eval.stats import summarize

SETS = {
    "forget": "synth:forget_perturbed",
    "retain": "synth:retain_perturbed",
    "real_authors": "synth:real_authors_perturbed",
    "world_facts": "synth:world_facts_perturbed",
    "holdout": "synth:holdout",
}


def small_recipe(model_dir, out, **kwargs) -> EvalRecipe:
    recipe = EvalRecipe(
        output_dir=str(out),
        model=ModelConfig(name_or_path=str(model_dir), dtype="float32"),
        subset=3,
        max_new_tokens=4,
        batch_size=8,
    )
    for key, value in kwargs.items():
        setattr(recipe, key, value)
    return recipe


def test_evaluate_model_gives_every_summary_number(tiny_model, tokenizer):
    sets = {name: load_rows(spec, role=name)[:3] for name, spec in SETS.items()}
    result = evaluate_model(tiny_model, tokenizer, sets, EvalRecipe(max_new_tokens=3, batch_size=8))
    s = result.summary
    for name in ("forget", "retain", "real_authors", "world_facts"):
        for metric in ("probability", "rougeL", "truth_ratio_score"):
            assert 0.0 <= s[f"{name}/{metric}"] <= 1.0, f"{name}/{metric}"
    assert 0.0 <= s["model_utility"] <= 1.0
    for attack in ("loss", "zlib", "min_k", "min_k_pp"):
        assert 0.0 <= s[f"mia/{attack}_auc"] <= 1.0
    assert "forget_quality" not in s and "holdout" not in result.generations
    assert set(result.generations) == {"forget", "retain", "real_authors", "world_facts"}
    assert s == summarize(result.per_example)  # the summary is exactly the pure re-aggregation


def test_run_eval_writes_outputs_and_compares_with_retain_and_target(tiny_model_dir, tmp_path):
    first = run_eval(small_recipe(tiny_model_dir, tmp_path / "retain"))
    folder = tmp_path / "retain"
    for name in ("summary.json", "per_example.jsonl", "report.md", "truth_ratio_forget.png", "utility_components.png"):
        assert (folder / name).is_file(), name
    records = [json.loads(line) for line in (folder / "per_example.jsonl").read_text().splitlines()]
    assert len(records) == 5 * 3 and {r["set"] for r in records} == set(SETS)
    assert all("generation" in r for r in records if r["set"] != "holdout")

    saved_summary, per_example = load_result(folder)
    assert saved_summary == pytest.approx(first)
    assert summarize(per_example) == pytest.approx(first)  # re-aggregation of the saved per-example values

    # the same model against itself as the retain model: forget quality 1, privleak 0
    second = run_eval(
        small_recipe(
            tiny_model_dir, tmp_path / "again", retain_result=str(folder), target_result=str(folder), generate=False
        )
    )
    assert second["forget_quality"] == pytest.approx(1.0)
    assert second["forget_quality_ks"] == 0.0
    assert second["privleak/min_k_pp"] == pytest.approx(0.0, abs=1e-9)
    report = (tmp_path / "again" / "report.md").read_text()
    assert "| metric | " in report and "| target | retain |" in report and "`forget_quality`" in report

    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--compare", str(folder), str(tmp_path / "again"), "--out", str(tmp_path / "c")])
    assert args.func(args) == 0
    compare = (tmp_path / "c" / "compare.md").read_text()
    assert "| metric | retain | again | note |" in compare and (tmp_path / "c" / "tradeoff.png").is_file()


def test_run_eval_rejects_retain_result_of_another_forget_split(tiny_model_dir, tmp_path):
    run_eval(small_recipe(tiny_model_dir, tmp_path / "retain", generate=False))
    recipe = small_recipe(tiny_model_dir, tmp_path / "other", generate=False, retain_result=str(tmp_path / "retain"))
    recipe.subset = 2
    with pytest.raises(DataError, match="forget set"):
        run_eval(recipe)
    with pytest.raises(OutputDirError):
        run_eval(small_recipe(tiny_model_dir, tmp_path / "retain", generate=False))
    with pytest.raises(DataError, match="summary.json"):
        load_result(tmp_path)


def test_cli_flags_and_config(tiny_model_dir, tmp_path):
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(
        ["eval", "--model", str(tiny_model_dir), "--data", "forget=synth:forget_perturbed", "--data", "retain=",
         "--data", "real_authors=", "--data", "world_facts=", "--data", "holdout=", "--out", str(out),
         "--subset", "2", "--no-generate", "model.dtype=float32"]
    )  # fmt: skip
    assert args.func(args) == 0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert set(summary) == {"forget/probability", "forget/truth_ratio_score"}
    bad = parser.parse_args(["eval", "--model", "x", "--data", "forgot=synth:forget"])
    with pytest.raises(ConfigError, match="unknown set 'forgot'"):
        args.func(bad)
    with pytest.raises(ConfigError, match="batch_size"):
        load_recipe(EvalRecipe, None, ["batch_size=0"])


def test_shipped_eval_configs_parse():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "configs" / "eval").glob("*.yaml"))
    assert configs
    for path in configs:
        recipe = load_recipe(EvalRecipe, path)
        assert recipe.sets.forget, path
        assert np.isfinite(recipe.mia_k)
