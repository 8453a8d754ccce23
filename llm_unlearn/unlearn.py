"""The unlearn run: recipe -> model + data -> UnlearnTrainer -> adapter/model + manifest; and its CLI hooks.

`run_unlearn` is what `llm-unlearn unlearn CONFIG` and `recipes/unlearn.py` call. The losses, the method
registry and the trainer live in `losses.py`, `methods.py` and `trainer.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_unlearn.config import LoraConfig, UnlearnRecipe, recipe_to_dict
from llm_unlearn.errors import ConfigError, DataError
from llm_unlearn.launch import add_recipe_command
from llm_unlearn.methods import Hyperparams, Method, get_method, list_methods, resolve_hyperparams
from llm_unlearn.outputs import library_versions

MANIFEST_NAME = "unlearn_manifest.json"

# TrainingArguments defaults we change unless the recipe's `training:` section sets them.
TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "logging_steps": 10,
    "save_strategy": "no",
    "num_train_epochs": 5,
    "per_device_train_batch_size": 4,
}

__all__ = [
    "MANIFEST_NAME",
    "UnlearnSetup",
    "add_methods_parser",
    "add_unlearn_parser",
    "build_unlearn_trainer",
    "format_methods",
    "run_unlearn",
    "weights_sha256",
]


@dataclass
class UnlearnSetup:
    """Everything `run_unlearn` builds before training (returned by `build_unlearn_trainer` for inspection)."""

    trainer: Any
    tokenizer: Any
    output_dir: Path
    method: Method
    hyperparams: Hyperparams
    forget_rows: list[dict[str, Any]]
    retain_rows: list[dict[str, Any]]
    base_path: str


def weights_sha256(folder: str | Path) -> dict[str, str]:
    """sha256 of each `*.safetensors` file of a local model/adapter folder (`{}` for a hub id)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    hashes = {}
    for path in sorted(folder.glob("*.safetensors")):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        hashes[path.name] = digest.hexdigest()
    return hashes


def _training_args(recipe: UnlearnRecipe, method: Method, hp: Hyperparams, output_dir: Path) -> Any:
    import torch
    from transformers import TrainingArguments

    from llm_unlearn.finetune import cpu_ddp_defaults
    from llm_unlearn.models import pick_dtype

    kwargs: dict[str, Any] = {**TRAINING_DEFAULTS, **cpu_ddp_defaults(), "learning_rate": hp.learning_rate}
    kwargs["bf16"] = pick_dtype(recipe.model.dtype) == torch.bfloat16
    kwargs.update(recipe.training)
    if kwargs.get("remove_unused_columns"):
        raise ConfigError("training.remove_unused_columns must be false: batches are nested forget/retain dicts")
    kwargs.update(output_dir=str(output_dir), seed=recipe.seed, remove_unused_columns=False)
    return TrainingArguments(**kwargs)


def _load_model(recipe: UnlearnRecipe) -> tuple[Any, Any]:
    """Base model (+ the recipe's fine-tuned adapter merged in, so it is the reference) (+ a fresh LoRA)."""
    from llm_unlearn.models import attach_lora, load_model, load_tokenizer

    cfg = recipe.model
    tokenizer = load_tokenizer(cfg.name_or_path, cfg.revision, cfg.trust_remote_code)
    model = load_model(cfg)
    if cfg.adapter:
        from peft import PeftModel

        if not Path(cfg.adapter, "adapter_config.json").is_file():
            raise ConfigError(f"model.adapter: {cfg.adapter} has no adapter_config.json; not a peft adapter folder")
        model = PeftModel.from_pretrained(model, cfg.adapter).merge_and_unload()
    if recipe.lora.enabled:
        model = attach_lora(model, recipe.lora, quantized=cfg.quantization == "4bit")
    elif cfg.quantization:
        raise ConfigError("model.quantization: 4-bit weights can only be trained with lora.enabled: true")
    return model, tokenizer


def _load_data(recipe: UnlearnRecipe, method: Method, tokenizer: Any) -> tuple[list, list, Any, Any]:
    from llm_unlearn.data.collate import ForgetRetainDataset, PromptFormatter, draw_refusals
    from llm_unlearn.data.requests import validate_forget_retain
    from llm_unlearn.data.sources import load_rows
    from llm_unlearn.data.tofu import load_refusals
    from llm_unlearn.finetune import encode_rows

    data = recipe.data
    if method.needs_retain and not data.retain:
        raise ConfigError(f"data.retain: method {method.name!r} needs a retain set")
    forget = load_rows(data.forget, data, "forget")
    retain = load_rows(data.retain, data, "retain") if data.retain and method.needs_retain else []
    forget, retain, report = validate_forget_retain(
        forget,
        retain,
        tokenizer=tokenizer,
        max_length=data.max_length,
        truncation=data.truncation,
        template=data.prompt_template,
        forget_name=data.forget,
        retain_name=data.retain or "retain set",
    )
    fmt = PromptFormatter(tokenizer, data.prompt_template, data.max_length, data.truncation)
    forget_ex = encode_rows(forget, fmt, data.forget)
    retain_ex = encode_rows(retain, fmt, data.retain) if retain else None
    idk_ex = None
    if method.needs_idk:
        if any("question" not in row for row in forget):
            raise DataError(f"{data.forget}: method {method.name!r} needs question/answer rows, not text passages")
        refusals = draw_refusals(len(forget), load_refusals(data.idk_file, data.tofu_dir), recipe.seed)
        idk_ex = fmt.encode_many([(r["question"], a) for r, a in zip(forget, refusals, strict=True)], "refusals")
    dataset = ForgetRetainDataset(forget_ex, retain_ex, idk_ex, seed=recipe.seed)
    return forget, retain, dataset, report


def build_unlearn_trainer(recipe: UnlearnRecipe) -> UnlearnSetup:
    """Validate config and output folder, load model + data, build the `UnlearnTrainer` (no training yet).

    TrainingArguments are created before the model is loaded so that under DeepSpeed ZeRO-3 the weights are
    partitioned while loading.
    """
    from transformers import set_seed

    from llm_unlearn.models import resolve_model_path
    from llm_unlearn.outputs import prepare_output_dir
    from llm_unlearn.trainer import UnlearnTrainer

    method = get_method(recipe.method.name)
    hp = resolve_hyperparams(method, recipe.method)
    base_path = resolve_model_path(recipe.model.name_or_path)
    protected = [base_path] + ([recipe.model.adapter] if recipe.model.adapter else [])
    args = _training_args(recipe, method, hp, Path(recipe.output_dir))
    with args.main_process_first(local=False):
        output_dir = prepare_output_dir(recipe.output_dir, recipe.overwrite, protected=protected)
    set_seed(recipe.seed)
    model, tokenizer = _load_model(recipe)
    forget, retain, dataset, _ = _load_data(recipe, method, tokenizer)
    ref_model = None
    online_ref = method.needs_reference_logits or (method.needs_reference and not recipe.method.precompute_reference)
    # Full fine-tuning under DeepSpeed: a second load (partitioned as it loads under ZeRO-3), not a deep copy.
    if online_ref and not recipe.lora.enabled and args.deepspeed_plugin is not None:
        ref_model = _load_model(UnlearnRecipe(model=recipe.model, lora=LoraConfig(enabled=False)))[0]
        ref_model.eval().requires_grad_(False)
    trainer = UnlearnTrainer(
        model,
        args,
        dataset,
        method=method,
        hyperparams=hp,
        ref_model=ref_model,
        precompute_reference=recipe.method.precompute_reference,
        forget_nll_ceiling=recipe.method.forget_nll_ceiling,
        processing_class=tokenizer,
    )
    return UnlearnSetup(trainer, tokenizer, output_dir, method, hp, forget, retain, base_path)


def run_unlearn(recipe: UnlearnRecipe) -> Path:
    """Unlearn `recipe.data.forget` from `recipe.model` with `recipe.method` and save the result.

    Steps: 1. resolve the method and check the output folder (refused when non-empty without overwrite, or
    inside the base model); 2. load model (+ fresh LoRA) and data (validated, encoded); 3. `UnlearnTrainer.train()`
    (stops with `TrainingDivergedError` on NaN or a runaway forget NLL); 4. save adapter/model + tokenizer
    (every rank takes part, as ZeRO-3 gathers weights; weights with NaN are never saved) and
    `unlearn_manifest.json` (main process only).

    Returns:
        The output folder.
    """
    from llm_unlearn.data.requests import fingerprint

    start = time.time()
    setup = build_unlearn_trainer(recipe)
    trainer = setup.trainer
    result = trainer.train()
    trainer.save_model(str(setup.output_dir))  # raises TrainingDivergedError on non-finite weights
    if trainer.is_world_process_zero():
        setup.tokenizer.save_pretrained(str(setup.output_dir))
        last = next((h for h in reversed(trainer.state.log_history) if "forget/nll" in h), {})
        manifest = {
            "kind": "unlearn",
            "base_model": recipe.model.name_or_path,
            "base_model_path": setup.base_path,
            "base_weights_sha256": weights_sha256(setup.base_path),
            "input_adapter": recipe.model.adapter,
            "input_adapter_sha256": weights_sha256(recipe.model.adapter) if recipe.model.adapter else None,
            "adapter": bool(recipe.lora.enabled),
            "method": {
                "name": setup.method.name,
                "formula": setup.method.formula,
                "hyperparameters": dataclasses.asdict(setup.hyperparams),
                "precompute_reference": recipe.method.precompute_reference,
                "forget_nll_ceiling": recipe.method.forget_nll_ceiling,
            },
            "forget": {"spec": recipe.data.forget, "size": len(setup.forget_rows), "fingerprint": ""},
            "retain": {
                "spec": recipe.data.retain if setup.method.needs_retain else None,
                "size": len(setup.retain_rows),
            },
            "seed": recipe.seed,
            "world_size": trainer.args.world_size,
            "global_step": result.global_step,
            "train_loss": result.training_loss,
            "last_metrics": last,
            "recipe": recipe_to_dict(recipe),
            "versions": library_versions(),
            "wall_time_s": round(time.time() - start, 2),
        }
        manifest["forget"]["fingerprint"] = fingerprint(setup.forget_rows)
        manifest["retain"]["fingerprint"] = fingerprint(setup.retain_rows) if setup.retain_rows else None
        (setup.output_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    trainer.accelerator.wait_for_everyone()
    return setup.output_dir


# --------------------------------------------------------------------------------------------
# CLI hooks (the lead's `llm-unlearn` argparse CLI calls these)
# --------------------------------------------------------------------------------------------


def format_methods() -> str:
    """One block per registered method: name, formula, defaults, what it needs, paper."""
    blocks = []
    for name in list_methods():
        m = get_method(name)
        needs = [
            label
            for flag, label in (
                (m.needs_reference, "reference"),
                (m.needs_reference_logits, "reference logits each step"),
                (m.needs_retain, "retain set"),
                (m.needs_idk, "refusal answers"),
            )
            if flag
        ]
        blocks.append(
            f"{name}\n  loss:     {m.formula}\n  defaults: {m.describe_defaults()}\n"
            f"  needs:    {', '.join(needs) or 'forget set only'}\n  paper:    {m.paper}"
        )
    return "\n".join(blocks)


def _cmd_methods(args: argparse.Namespace) -> int:
    print(format_methods())
    return 0


def add_methods_parser(subparsers: argparse._SubParsersAction) -> None:
    """`llm-unlearn methods`: list every registered method with its formula and defaults."""
    parser = subparsers.add_parser("methods", help="List unlearning methods with their loss and defaults.")
    parser.set_defaults(func=_cmd_methods)


def add_unlearn_parser(subparsers: argparse._SubParsersAction) -> None:
    """`llm-unlearn unlearn CONFIG [k=v ...] [--overwrite]`."""
    add_recipe_command(
        subparsers,
        "unlearn",
        UnlearnRecipe,
        run_unlearn,
        help="Unlearn a forget set with a registered method (see `llm-unlearn methods`).",
        description="Run an unlearning recipe. Under several processes run "
        "`accelerate launch --config_file configs/accelerate/ddp.yaml recipes/unlearn.py --config CONFIG`.",
    )
