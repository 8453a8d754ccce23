"""Tests of EvalCallback (evaluation during training, best-step rule) on the tiny model with a plain Trainer."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import Trainer, TrainingArguments

from llm_unlearn.data.collate import PromptFormatter, pad_examples
from llm_unlearn.data.sources import load_rows
from llm_unlearn.errors import ConfigError
from llm_unlearn.eval.callback import EvalCallback, KeepBestRule
from llm_unlearn.eval.runner import EvalRecipe, evaluate_model


def test_keep_best_rule_parsing_and_guard():
    rule = KeepBestRule.parse("max forget_quality where model_utility >= 0.95 * target", {"model_utility": 0.6})
    assert (rule.mode, rule.metric, rule.guard, rule.op) == ("max", "forget_quality", "model_utility", ">=")
    assert rule.threshold == pytest.approx(0.57)
    assert rule.score({"forget_quality": 0.3, "model_utility": 0.58}) == 0.3
    assert rule.score({"forget_quality": 0.9, "model_utility": 0.56}) is None  # utility below 0.95 x target
    assert rule.score({"forget_quality": math.nan, "model_utility": 0.7}) is None
    assert KeepBestRule.parse("min forget/probability").score({"forget/probability": 0.2}) == -0.2
    assert KeepBestRule.parse("max a where b < 3").score({"a": 1.0, "b": 4.0}) is None
    with pytest.raises(ConfigError, match="needs the target"):
        KeepBestRule.parse("max forget_quality where model_utility >= 0.95 * target")
    with pytest.raises(ConfigError, match="expected"):
        KeepBestRule.parse("best forget_quality")


class _Rows(torch.utils.data.Dataset):
    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


def test_callback_evaluates_every_n_steps_and_keeps_the_best(tiny_model, tokenizer, tmp_path):
    forget = load_rows("synth:forget_perturbed", role="forget")[:2]
    retain = load_rows("synth:retain_perturbed", role="retain")[:2]
    sets = {"forget": forget, "retain": retain}
    for name in ("real_authors", "world_facts"):
        sets[name] = load_rows(f"synth:{name}_perturbed", role=name)[:2]
    config = EvalRecipe(max_new_tokens=3, batch_size=16)  # generation is needed for model utility (ROUGE-L)
    # the retain model's per-example values = the untrained model's: forget quality starts at 1.0
    retain_values = evaluate_model(tiny_model, tokenizer, sets, config).per_example
    formatter = PromptFormatter(tokenizer, max_length=128)
    train = _Rows([formatter.encode(r["question"], r["answer"]) for r in forget])  # fine-tune ON the forget set
    callback = EvalCallback(
        sets, every_n_steps=2, keep_best="max forget/probability", retain=retain_values, config=config
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, learning_rate=5e-2,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, remove_unused_columns=False,
    )  # fmt: skip
    trainer = Trainer(
        model=tiny_model,
        args=args,
        train_dataset=train,
        data_collator=lambda items: pad_examples(items, tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train()
    assert [h["step"] for h in callback.history] == [2, 4]
    probs = [h["forget/probability"] for h in callback.history]
    assert probs[1] > probs[0]  # training on the forget answers raises their probability
    assert callback.best_step == 4 and callback.best_summary["forget/probability"] == probs[1]
    assert all(0.0 <= h["forget_quality"] <= 1.0 and 0.0 <= h["model_utility"] <= 1.0 for h in callback.history)
    assert (tmp_path / "best" / "config.json").is_file()
    saved = json.loads((tmp_path / "eval_history.json").read_text())
    assert saved["best_step"] == 4 and len(saved["history"]) == 2
    assert (tmp_path / "tradeoff_history.png").is_file()
