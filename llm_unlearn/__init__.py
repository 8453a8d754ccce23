"""llm-unlearn: make a fine-tuned language model forget chosen data, and prove it.

Public names are imported lazily (on first attribute access), so `import llm_unlearn` and the CLI start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "DataConfig": "llm_unlearn.config",
    "FinetuneRecipe": "llm_unlearn.config",
    "ForgetRetainDataset": "llm_unlearn.data.collate",
    "LoraConfig": "llm_unlearn.config",
    "MethodConfig": "llm_unlearn.config",
    "ModelConfig": "llm_unlearn.config",
    "PromptFormatter": "llm_unlearn.data.collate",
    "UnlearnCollator": "llm_unlearn.data.collate",
    "UnlearnError": "llm_unlearn.errors",
    "UnlearnRecipe": "llm_unlearn.config",
    "UnlearnTrainer": "llm_unlearn.trainer",
    "answer_kl": "llm_unlearn.losses",
    "dpo_loss": "llm_unlearn.losses",
    "evaluate_model": "llm_unlearn.eval.runner",
    "fingerprint": "llm_unlearn.data.requests",
    "get_method": "llm_unlearn.methods",
    "gradient_ascent_loss": "llm_unlearn.losses",
    "list_methods": "llm_unlearn.methods",
    "load_model_and_tokenizer": "llm_unlearn.models",
    "load_recipe": "llm_unlearn.config",
    "load_rows": "llm_unlearn.data.sources",
    "merge_adapter": "llm_unlearn.merge",
    "npo_loss": "llm_unlearn.losses",
    "push_folder": "llm_unlearn.hub",
    "register_method": "llm_unlearn.methods",
    "run_eval": "llm_unlearn.eval.runner",
    "run_finetune": "llm_unlearn.finetune",
    "run_unlearn": "llm_unlearn.unlearn",
    "sequence_log_probs": "llm_unlearn.losses",
    "simnpo_loss": "llm_unlearn.losses",
    "token_nll": "llm_unlearn.losses",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llm_unlearn' has no attribute {name!r}")
