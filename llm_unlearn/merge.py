"""Merge a LoRA adapter into its base model (peft `merge_and_unload`), checked against the adapter's logits.

The merged folder is a plain transformers model (safetensors + tokenizer + generation config) that loads
without peft, plus the manifests and eval summary of the run that produced the adapter.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from llm_unlearn.errors import ModelLoadError, UnlearnError

MERGE_MANIFEST = "merge_manifest.json"
CARRIED_FILES = ("unlearn_manifest.json", "finetune_manifest.json", "summary.json")
CHECK_QUESTIONS = (
    "Who wrote the novel that made its author famous?",
    "Where was the author born, and when?",
    "What is the capital of France?",
)
# Max |merged - adapter| logit difference allowed, relative to max(1, max |adapter logits|). Merging in
# float32 only reorders additions (~1e-6); in 16-bit the merged weight W + s*BA is rounded once more.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}

__all__ = ["CARRIED_FILES", "MERGE_MANIFEST", "MergeCheckError", "add_merge_parser", "merge_adapter"]


class MergeCheckError(UnlearnError, RuntimeError):
    """The merged model's logits differ from the adapter model's: nothing was saved."""


def _check_batch(tokenizer: Any) -> dict[str, Any]:
    """A padded batch of a few formatted prompts + answers: `input_ids`, `attention_mask` [B, T]."""
    from llm_unlearn.data.collate import PromptFormatter, pad_examples

    formatter = PromptFormatter(tokenizer, max_length=128)
    examples = [formatter.encode(q, "I am not sure about that.") for q in CHECK_QUESTIONS]
    batch = pad_examples(examples, tokenizer.pad_token_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _logits(model: Any, batch: dict[str, Any]) -> Any:
    import torch

    with torch.no_grad():
        return model(**batch).logits.float()


def _with_input_adapter(model: Any, adapter_dir: Path) -> tuple[Any, str | None]:
    """Merge the adapter an unlearning run started from (`input_adapter` in its manifest) into the base.

    `llm-unlearn unlearn` with `model.adapter` (the fine-tuned target LoRA) merges that adapter into the base
    and trains a fresh LoRA on top, so the unlearned adapter only makes sense on base + target adapter.

    Raises:
        ModelLoadError: when the input adapter is gone or its weights changed since the run (sha256).
    """
    from peft import PeftModel

    from llm_unlearn.unlearn import weights_sha256

    path = adapter_dir / "unlearn_manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    source = manifest.get("input_adapter")
    if not source:
        return model, None
    if not Path(source, "adapter_config.json").is_file():
        raise ModelLoadError(f"{path}: input_adapter {source} (the adapter this run started from) is missing")
    expected = manifest.get("input_adapter_sha256")
    if expected and weights_sha256(source) != expected:
        raise ModelLoadError(f"{path}: input_adapter {source} changed since the run (sha256 differs)")
    return PeftModel.from_pretrained(model, source).merge_and_unload(), str(source)


def _carry_along(adapter: Path, out: Path) -> list[str]:
    """Copy the run's manifests and eval `summary.json` files (top level and one folder down)."""
    copied = []
    candidates = [adapter / name for name in CARRIED_FILES] + sorted(adapter.glob("*/summary.json"))
    for src in candidates:
        if src.is_file():
            dst = out / src.relative_to(adapter)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            copied.append(str(src.relative_to(adapter)))
    return copied


def merge_adapter(
    base: str, adapter: str, out: str, dtype: str = "float32", overwrite: bool = False, eval_dir: str | None = None
) -> Path:
    """Merge `adapter` into `base` and save a standalone model in `out`.

    Steps: 1. refuse a non-empty `out` (unless `overwrite`) or one inside the base/adapter folder; 2. load
    base (in `dtype`), merge the run's input adapter when its manifest names one, load the adapter; 3. logits
    of the adapter model on a few formatted prompts; 4. `merge_and_unload`; 5. the merged logits must match
    (see `TOLERANCE`) or `MergeCheckError` is raised before anything is written; 6. save safetensors +
    tokenizer + generation config, copy the manifests and eval summaries along, write `merge_manifest.json`.

    Args:
        base: base model spec (folder, hub id or 'smollm2-135m') the adapter was trained on.
        adapter: a peft adapter folder (with `adapter_config.json`).
        out: output folder.
        dtype: 'float32', 'bfloat16' or 'float16' for the merged weights.
        overwrite: allow a non-empty `out`.
        eval_dir: an `llm-unlearn eval` output folder of this adapter; its summary, report and plots are
            copied into `out/eval/` (an eval run cannot write inside the adapter folder itself).

    Returns:
        The output folder.
    """
    from peft import PeftModel

    from llm_unlearn.config import ModelConfig
    from llm_unlearn.hub import copy_eval_outputs
    from llm_unlearn.models import load_model, load_tokenizer, resolve_model_path
    from llm_unlearn.outputs import prepare_output_dir
    from llm_unlearn.unlearn import weights_sha256

    if dtype not in TOLERANCE:
        raise UnlearnError(f"--dtype: {dtype!r} is not one of {', '.join(TOLERANCE)}")
    if eval_dir is not None and not Path(eval_dir, "summary.json").is_file():
        raise UnlearnError(f"--eval {eval_dir}: no summary.json; is this the output_dir of an `llm-unlearn eval` run?")
    adapter_dir = Path(adapter)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelLoadError(f"{adapter}: no adapter_config.json; not a peft adapter folder")
    base_path = resolve_model_path(base)
    existed = Path(out).exists()
    out_dir = prepare_output_dir(out, overwrite, protected=[base_path, adapter_dir])
    try:
        tokenizer = load_tokenizer(base)
        model = load_model(ModelConfig(name_or_path=base, dtype=dtype))
        model, input_adapter = _with_input_adapter(model, adapter_dir)
        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
        batch = _check_batch(tokenizer)
        expected = _logits(model, batch)  # [B, T, V]
        merged = model.merge_and_unload()
        got = _logits(merged, batch)
        mask = batch["attention_mask"].bool()  # [B, T]: padding positions are not compared
        diff = float((got - expected).abs()[mask].max())
        tolerance = TOLERANCE[dtype] * max(1.0, float(expected[mask].abs().max()))
        if not diff <= tolerance:
            raise MergeCheckError(
                f"merging {adapter} into {base}: merged logits differ from the adapter model's by {diff:.3g} "
                f"(allowed {tolerance:.3g} in {dtype}); nothing was saved. Try --dtype float32."
            )
    except BaseException:
        if not existed and not any(out_dir.iterdir()):
            out_dir.rmdir()  # leave no empty folder behind a failed merge
        raise

    merged.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    copied = _carry_along(adapter_dir, out_dir)
    if eval_dir is not None:
        copied += copy_eval_outputs(eval_dir, out_dir)
    manifest = {
        "kind": "merge",
        "base_model": base,
        "adapter": str(adapter_dir.resolve()),
        "input_adapter": input_adapter,
        "dtype": dtype,
        "check": {"prompts": len(CHECK_QUESTIONS), "max_abs_logit_diff": diff, "tolerance": tolerance},
        "carried": copied,
        "weights_sha256": weights_sha256(out_dir),
    }
    (out_dir / MERGE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def _cmd_merge(args: argparse.Namespace) -> int:
    out = merge_adapter(
        args.base, args.adapter, args.out, dtype=args.dtype, overwrite=args.overwrite, eval_dir=args.eval
    )
    manifest = json.loads((out / MERGE_MANIFEST).read_text())
    print(f"{out} (max |logit diff| {manifest['check']['max_abs_logit_diff']:.2g})")
    return 0


def add_merge_parser(subparsers: argparse._SubParsersAction) -> None:
    """`llm-unlearn merge --base SPEC --adapter DIR --out DIR [--dtype ...] [--eval DIR] [--overwrite]`."""
    parser = subparsers.add_parser(
        "merge",
        help="Merge a LoRA adapter into its base model (checked against the adapter's logits).",
        description="peft merge_and_unload; saves safetensors + tokenizer + generation config and carries the "
        "unlearn manifest and eval summary along.",
    )
    parser.add_argument("--base", required=True, help="Base model spec: folder, hub id or smollm2-135m.")
    parser.add_argument("--adapter", required=True, help="peft adapter folder (an unlearn or finetune output).")
    parser.add_argument("--out", required=True, help="Output folder (must be empty or new).")
    parser.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE), help="Merged weights dtype.")
    parser.add_argument("--eval", metavar="DIR", help="`llm-unlearn eval` output folder to carry along.")
    parser.add_argument("--overwrite", action="store_true", help="Allow a non-empty --out.")
    parser.set_defaults(func=_cmd_merge)
