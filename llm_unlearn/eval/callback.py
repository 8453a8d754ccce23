"""Evaluation during unlearning: a `transformers.TrainerCallback` that runs the probes every N steps, records the
history and keeps the best step by a configurable rule. The metrics themselves live in runner/probes/stats.

Several processes: only the main process (`state.is_world_process_zero`) evaluates, on the unwrapped model;
the other ranks carry on and meet it at the next synchronization. This is fine under DDP; it is not supported
when the parameters are sharded (DeepSpeed ZeRO-3, FSDP), where a forward needs every rank.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from llm_unlearn.errors import ConfigError
from llm_unlearn.eval.report import plot_tradeoff
from llm_unlearn.eval.runner import EvalRecipe, evaluate_model, load_result

HISTORY_FILE = "eval_history.json"
_RULE = re.compile(
    r"^\s*(?P<mode>max|min)\s+(?P<metric>[\w/]+)"
    r"(?:\s+where\s+(?P<guard>[\w/]+)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[0-9.eE+-]+)(?P<rel>\s*\*\s*target)?)?\s*$"
)
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass
class KeepBestRule:
    """ "max METRIC [where GUARD OP VALUE [* target]]", e.g. "max forget_quality where model_utility >= 0.95 * target".

    `* target` multiplies VALUE by the target model's GUARD value. A step whose summary fails the guard, or lacks
    the metric, is never best.
    """

    mode: str
    metric: str
    guard: str | None = None
    op: str = ">="
    threshold: float = math.nan

    @classmethod
    def parse(cls, text: str, target: Mapping[str, float] | None = None) -> KeepBestRule:
        match = _RULE.match(text)
        if not match:
            raise ConfigError(
                f"keep_best {text!r}: expected 'max|min METRIC [where METRIC >= VALUE [* target]]', "
                "e.g. 'max forget_quality where model_utility >= 0.95 * target'"
            )
        guard, threshold = match["guard"], math.nan
        if guard:
            threshold = float(match["value"])
            if match["rel"]:
                if target is None or guard not in target:
                    raise ConfigError(f"keep_best {text!r}: '* target' needs the target model's '{guard}' value")
                threshold *= float(target[guard])
        return cls(match["mode"], match["metric"], guard, match["op"] or ">=", threshold)

    def score(self, summary: Mapping[str, float]) -> float | None:
        """The value to maximize (negated for "min"), or None when the step is not eligible."""
        value = summary.get(self.metric)
        if value is None or math.isnan(value):
            return None
        if self.guard:
            guard = summary.get(self.guard)
            if guard is None or math.isnan(guard) or not _OPS[self.op](guard, self.threshold):
                return None
        return value if self.mode == "max" else -value


class EvalCallback(TrainerCallback):
    """Run the probes every `every_n_steps` optimizer steps (and at the end) and keep the best step.

    Args:
        sets: {set name: rows} as for `evaluate_model` (forget, retain, real_authors, world_facts, holdout).
        every_n_steps: evaluation period in global steps.
        subset: evaluate only the first N rows of each set (keeps it cheap).
        keep_best: a `KeepBestRule` text; None records history only.
        target: the target model's summary, or its eval output folder (for "* target" rules and the report).
        retain: the retain model's eval output folder or per-example dict (gives forget quality).
        tokenizer: default: the Trainer's `processing_class`.
        config: EvalRecipe with batch size / generation settings (default: batch 16, generation of at most 32
            new tokens; model utility needs the generations' ROUGE-L, so keep generation on for utility rules).
        save_best_dir: where the best model (adapter under peft) is saved; default `<output_dir>/best`;
            "" disables saving.

    Attributes:
        history: [{"step": s, **summary}, ...]; `best_step`, `best_summary` after a step won.
    """

    def __init__(
        self,
        sets: Mapping[str, Sequence[dict[str, Any]]],
        every_n_steps: int = 50,
        subset: int | None = None,
        keep_best: str | None = None,
        target: Mapping[str, float] | str | None = None,
        retain: Mapping[str, Any] | str | None = None,
        tokenizer: Any = None,
        config: EvalRecipe | None = None,
        save_best_dir: str | None = None,
    ):
        if every_n_steps < 1:
            raise ConfigError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.sets = dict(sets)
        self.every_n_steps = every_n_steps
        self.config = config or EvalRecipe(max_new_tokens=32)
        if subset is not None:
            self.config = dataclasses.replace(self.config, subset=subset)
        self.target = load_result(target)[0] if isinstance(target, str | Path) else target
        self.retain = load_result(retain)[1] if isinstance(retain, str | Path) else retain
        self.rule = KeepBestRule.parse(keep_best, self.target) if keep_best else None
        self.tokenizer = tokenizer
        self.save_best_dir = save_best_dir
        self.history: list[dict[str, Any]] = []
        self.best_step: int | None = None
        self.best_summary: dict[str, float] | None = None
        self._best_score = -math.inf

    def evaluate(self, model: Any, tokenizer: Any, step: int, output_dir: str | None = None) -> dict[str, float]:
        """Evaluate now, append to the history, update the best step; returns the summary."""
        result = evaluate_model(model, tokenizer, self.sets, self.config, self.retain)
        self.history.append({"step": step, **result.summary})
        score = self.rule.score(result.summary) if self.rule else None
        if score is not None and score > self._best_score:
            self._best_score, self.best_step, self.best_summary = score, step, dict(result.summary)
            save_dir = (
                self.save_best_dir if self.save_best_dir is not None else output_dir and str(Path(output_dir, "best"))
            )
            if save_dir:
                model.save_pretrained(save_dir)
                if tokenizer is not None:
                    tokenizer.save_pretrained(save_dir)
        return result.summary

    def _maybe_evaluate(self, args: Any, state: Any, kwargs: dict[str, Any]) -> None:
        if not state.is_world_process_zero or any(h["step"] == state.global_step for h in self.history):
            return
        tokenizer = self.tokenizer or kwargs.get("processing_class")
        self.evaluate(kwargs["model"], tokenizer, state.global_step, args.output_dir)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every_n_steps == 0:
            self._maybe_evaluate(args, state, kwargs)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._maybe_evaluate(args, state, kwargs)
        if state.is_world_process_zero and args.output_dir:
            self.write(args.output_dir)
        return control

    def write(self, output_dir: str | Path) -> Path:
        """Write `eval_history.json` (history, rule, best step) and, with forget quality, `tradeoff_history.png`."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "rule": None if self.rule is None else vars(self.rule),
            "best_step": self.best_step,
            "best_summary": self.best_summary,
            "history": self.history,
        }
        (out / HISTORY_FILE).write_text(json.dumps(_clean(payload), indent=2) + "\n", encoding="utf-8")
        if len(self.history) > 1 and all("forget_quality" in h and "model_utility" in h for h in self.history):
            plot_tradeoff([(f"step {h['step']}", h) for h in self.history], out / "tradeoff_history.png")
        return out / HISTORY_FILE


def _clean(value: Any) -> Any:
    """JSON-ready copy: NaN/inf -> null, numpy scalars -> Python."""
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
