"""Supervised fine-tuning of the target / retain model with trl's SFTTrainer; loss on answer tokens only.

TOFU's forget quality compares an unlearned model with a *retain model*: the same base fine-tuned on the
retain split only. The *target model* is the base fine-tuned on everything (forget + retain). Both come from
`run_finetune`, with `data.forget` naming the training set (`synth:full`, `synth:retain`, `tofu:full`,
`tofu:retain90`, a file...).

Training sees exactly the token ids evaluation and unlearning see: rows are encoded by our `PromptFormatter`
and handed to `SFTTrainer` pre-tokenized (`input_ids` + `completion_mask`, `completion_only_loss=True`), so trl
never re-tokenizes the text (its own prompt/completion path tokenizes `prompt + completion` jointly and
appends EOS as text, which can merge tokens across the boundary and differs from our chat-turn format).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_unlearn.config import FinetuneRecipe, recipe_to_dict
from llm_unlearn.errors import ConfigError, DataError
from llm_unlearn.launch import add_recipe_command
from llm_unlearn.outputs import library_versions

MANIFEST_NAME = "finetune_manifest.json"
LOSS_PLOT = "train_loss.png"

# TrainingArguments defaults we change unless the recipe's `training:` section sets them. trl turns on
# gradient checkpointing and bf16 by default; we keep the precision of the loaded model and plain backprop.
TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "logging_steps": 10,
    "save_strategy": "no",
}

# SFTConfig fields the recipe may not set: they would break the "same tokens as evaluation" contract.
_FIXED_SFT_FIELDS = ("completion_only_loss", "max_length", "packing", "padding_free", "dataset_text_field")

__all__ = [
    "MANIFEST_NAME",
    "FinetuneSetup",
    "add_finetune_parser",
    "build_sft_dataset",
    "build_sft_trainer",
    "cpu_ddp_defaults",
    "cpu_launch_defaults",
    "encode_rows",
    "plot_train_loss",
    "run_finetune",
]


def encode_rows(rows: list[dict[str, Any]], formatter: Any, source: str) -> list[dict[str, list[int]]]:
    """Encode training rows with the shared `PromptFormatter`.

    Args:
        rows: dicts with `question` + `answer`, or `text` (a passage: every token is trained on).
        formatter: `llm_unlearn.data.collate.PromptFormatter`.
        source: the data spec, named in errors.

    Returns:
        Encoded examples `{input_ids, attention_mask, labels}`; `labels` is -100 on prompt tokens.

    Raises:
        DataError: when a row has neither question/answer nor text, or the set is empty.
    """
    if not rows:
        raise DataError(f"{source}: the training set is empty")
    examples: list[dict[str, list[int]]] = []
    pairs: list[tuple[str, str]] = []
    for i, row in enumerate(rows):
        where = row.get("source") or f"{source} record {i}"
        if "question" in row and "answer" in row:
            pairs.append((str(row["question"]), str(row["answer"])))
        elif "text" in row:
            examples.extend(formatter.encode_text(str(row["text"]), where))
        else:
            raise DataError(f"{where}: row has neither question/answer nor text (keys: {sorted(row)})")
    if pairs:
        examples.extend(formatter.encode_many(pairs, source))
    return examples


def build_sft_dataset(examples: list[dict[str, list[int]]]) -> Any:
    """A pre-tokenized `datasets.Dataset` for SFTTrainer.

    Columns: `input_ids` [T_i] and `completion_mask` [T_i] (1 where our labels are not -100). With
    `completion_only_loss=True` trl turns the mask into labels that equal our `labels` exactly.
    """
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [e["input_ids"] for e in examples],
            "completion_mask": [[int(label != -100) for label in e["labels"]] for e in examples],
        }
    )


def cpu_launch_defaults() -> dict[str, Any]:
    """TrainingArguments that make an `accelerate launch` of several processes work on a machine without a GPU.

    - DDP (`--multi_gpu`): accelerate starts the processes, but the Trainer builds a gloo process group only
      when `use_cpu` is set; otherwise every process silently trains alone on the full batch.
    - DeepSpeed (`DS_ACCELERATOR=cpu`): the Trainer gives accelerate no backend, and accelerate then counts a
      single process although DeepSpeed joined all of them (the batch-size check fails). We set up the
      process state with the gloo backend first and tell the Trainer to use it.

    Must run before the TrainingArguments are created. With a GPU, or a single process, it does nothing.

    Returns:
        Extra TrainingArguments: `{"use_cpu": True}`, `{"accelerator_config": {"use_configured_state": True}}`
        or `{}`.
    """
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.accelerator.is_available():
        return {}
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        from accelerate import PartialState

        PartialState(backend="gloo")
        return {"accelerator_config": {"use_configured_state": True}}
    return {"use_cpu": True}


cpu_ddp_defaults = cpu_launch_defaults  # earlier name, used by llm_unlearn.unlearn


def _sft_config(recipe: FinetuneRecipe, output_dir: Path) -> Any:
    from trl import SFTConfig

    from llm_unlearn.models import pick_dtype

    clash = [key for key in _FIXED_SFT_FIELDS if key in recipe.training]
    if clash:
        raise ConfigError(f"training.{clash[0]}: set by the finetune recipe itself (use data.max_length for length)")
    dtype = pick_dtype(recipe.model.dtype)
    kwargs: dict[str, Any] = {**TRAINING_DEFAULTS, **cpu_launch_defaults()}
    kwargs["bf16"] = str(dtype) == "torch.bfloat16"
    if "gradient_checkpointing" not in recipe.training:  # trl's default is on; the new name wins when set
        kwargs["activation_checkpointing"] = False
    kwargs.update(recipe.training)
    kwargs.update(
        output_dir=str(output_dir),
        seed=recipe.seed,
        completion_only_loss=True,
        max_length=None,  # the formatter already truncated to data.max_length
        packing=False,
        padding_free=False,
    )
    return SFTConfig(**kwargs)


@dataclass
class FinetuneSetup:
    """Everything `run_finetune` builds before training (returned by `build_sft_trainer` for inspection)."""

    trainer: Any
    tokenizer: Any
    output_dir: Path
    rows: list[dict[str, Any]]
    examples: list[dict[str, list[int]]]
    base_path: str


def build_sft_trainer(recipe: FinetuneRecipe) -> FinetuneSetup:
    """Validate the output folder, load model + data, and build the `SFTTrainer` (no training yet).

    The SFTConfig is created before the model is loaded so that under DeepSpeed ZeRO-3 the weights are
    partitioned while loading (transformers' `zero.Init` path).
    """
    from transformers import set_seed
    from trl import SFTTrainer

    from llm_unlearn.data.collate import PromptFormatter
    from llm_unlearn.data.sources import load_rows
    from llm_unlearn.models import load_model_and_tokenizer, resolve_model_path
    from llm_unlearn.outputs import prepare_output_dir

    base_path = resolve_model_path(recipe.model.name_or_path)
    protected = [base_path] + ([recipe.model.adapter] if recipe.model.adapter else [])
    args = _sft_config(recipe, Path(recipe.output_dir))  # sets up the process group
    with args.main_process_first(local=False):  # the main process checks an empty folder before anyone writes
        output_dir = prepare_output_dir(recipe.output_dir, recipe.overwrite, protected=protected)
    set_seed(recipe.seed)
    model, tokenizer = load_model_and_tokenizer(recipe.model, recipe.lora, trainable=True)
    if recipe.data.retain:
        warnings.warn(
            f"data.retain ({recipe.data.retain}) is ignored by finetune: data.forget is the training set "
            "(synth:full / tofu:full for the target model); set data.retain: null",
            stacklevel=2,
        )
    rows = load_rows(recipe.data.forget, recipe.data, "forget")
    formatter = PromptFormatter(tokenizer, recipe.data.prompt_template, recipe.data.max_length, recipe.data.truncation)
    examples = encode_rows(rows, formatter, recipe.data.forget)
    trainer = SFTTrainer(model=model, args=args, train_dataset=build_sft_dataset(examples), processing_class=tokenizer)
    return FinetuneSetup(trainer, tokenizer, output_dir, rows, examples, base_path)


def _fingerprint(rows: list[dict[str, Any]]) -> str:
    from llm_unlearn.data.requests import fingerprint

    return fingerprint(rows)


def plot_train_loss(log_history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Answer-token training loss per logged step (the Trainer's `log_history`) as a PNG; None if nothing logged."""
    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    if not points:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(*zip(*points, strict=True), marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("NLL per answer token")
    ax.set_title("Supervised fine-tuning loss (answer tokens only)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def run_finetune(recipe: FinetuneRecipe) -> Path:
    """Fine-tune `recipe.model` on `recipe.data.forget` (the training set) and save the result.

    Steps: 1. check the output folder; 2. load model (+ fresh LoRA when `lora.enabled`) and rows; 3. encode
    with `PromptFormatter`; 4. `SFTTrainer.train()`; 5. save adapter/model + tokenizer (every rank takes part,
    as ZeRO-3 gathers weights), `finetune_manifest.json` and the loss curve `train_loss.png` (main process only).

    Returns:
        The output folder.
    """
    start = time.time()
    setup = build_sft_trainer(recipe)
    trainer = setup.trainer
    result = trainer.train()
    trainer.save_model(str(setup.output_dir))
    if trainer.is_world_process_zero():
        setup.tokenizer.save_pretrained(str(setup.output_dir))
        manifest = {
            "kind": "finetune",
            "base_model": recipe.model.name_or_path,
            "base_model_path": setup.base_path,
            "adapter": bool(recipe.lora.enabled),
            "train": {
                "spec": recipe.data.forget,
                "size": len(setup.rows),
                "examples": len(setup.examples),
                "answer_tokens": sum(sum(label != -100 for label in e["labels"]) for e in setup.examples),
                "fingerprint": _fingerprint(setup.rows),
            },
            "seed": recipe.seed,
            "world_size": trainer.args.world_size,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "global_step": result.global_step,
            "train_loss": result.training_loss,
            "recipe": recipe_to_dict(recipe),
            "versions": library_versions(),
            "wall_time_s": round(time.time() - start, 2),
        }
        (setup.output_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        plot_train_loss(trainer.state.log_history, setup.output_dir / LOSS_PLOT)
    trainer.accelerator.wait_for_everyone()
    return setup.output_dir


# --------------------------------------------------------------------------------------------
# CLI hook (the lead's `llm-unlearn` argparse CLI calls add_finetune_parser)
# --------------------------------------------------------------------------------------------


def add_finetune_parser(subparsers: argparse._SubParsersAction) -> None:
    """`llm-unlearn finetune CONFIG [k=v ...] [--overwrite]`."""
    add_recipe_command(
        subparsers,
        "finetune",
        FinetuneRecipe,
        run_finetune,
        help="Fine-tune the target (all data) or retain model (retain split) with trl's SFTTrainer.",
        description="Supervised fine-tuning with loss on answer tokens only. Under several processes run "
        "`accelerate launch --config_file configs/accelerate/ddp.yaml recipes/finetune.py --config CONFIG`.",
    )
