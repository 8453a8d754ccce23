"""TOFU-style evaluation: forward-pass probes, generation + ROUGE-L, membership inference, aggregation, reports.

The aggregation (`summarize` and the metric functions) is pure over numpy arrays, so per-example values from any
source — for instance another framework's logs via `load_tofu_eval_log` — can be re-aggregated and compared.
Model-facing entry points (`evaluate_model`, `run_eval`, `EvalCallback`) are imported lazily to keep
`import llm_unlearn.eval` light.
"""

from __future__ import annotations

from typing import Any

from llm_unlearn.eval.stats import (
    forget_quality,
    load_tofu_eval_log,
    mia_auc,
    model_utility,
    normalized_probability,
    option_probability,
    privleak,
    summarize,
    truth_ratio,
    truth_ratio_score,
)

_LAZY = {
    "EvalCallback": "llm_unlearn.eval.callback",
    "EvalRecipe": "llm_unlearn.eval.runner",
    "EvalResult": "llm_unlearn.eval.runner",
    "KeepBestRule": "llm_unlearn.eval.callback",
    "evaluate_model": "llm_unlearn.eval.runner",
    "load_result": "llm_unlearn.eval.runner",
    "plot_tradeoff": "llm_unlearn.eval.report",
    "rouge_l_recall": "llm_unlearn.eval.generation",
    "run_eval": "llm_unlearn.eval.runner",
}

__all__ = [
    "EvalCallback",
    "EvalRecipe",
    "EvalResult",
    "KeepBestRule",
    "evaluate_model",
    "forget_quality",
    "load_result",
    "load_tofu_eval_log",
    "mia_auc",
    "model_utility",
    "normalized_probability",
    "option_probability",
    "plot_tradeoff",
    "privleak",
    "rouge_l_recall",
    "run_eval",
    "summarize",
    "truth_ratio",
    "truth_ratio_score",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llm_unlearn.eval' has no attribute {name!r}")
