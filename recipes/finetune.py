"""Recipe: supervised fine-tuning of the target or retain model (trl SFTTrainer, loss on answers only).

Single process:
    python recipes/finetune.py --config configs/finetune/synth_target_lora.yaml [section.key=value ...]
Several processes (DDP, DeepSpeed ZeRO-2/3, FSDP):
    accelerate launch --config_file configs/accelerate/ddp.yaml recipes/finetune.py \
        --config configs/finetune/tofu_target_lora.yaml
On a CPU-only machine (2 processes over gloo):
    accelerate launch --config_file configs/accelerate/cpu_ddp.yaml recipes/finetune.py --config ...
The same as `llm-unlearn finetune CONFIG [section.key=value ...]`.
"""

from __future__ import annotations

import argparse
import sys

from llm_unlearn.config import FinetuneRecipe, load_recipe
from llm_unlearn.errors import UnlearnError
from llm_unlearn.finetune import run_finetune


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="Finetune recipe YAML.")
    parser.add_argument("--overwrite", action="store_true", help="Allow a non-empty output_dir.")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides.")
    args = parser.parse_args(argv)
    try:
        # setup -> train -> save: all in run_finetune
        recipe = load_recipe(
            FinetuneRecipe, args.config, args.overrides + (["overwrite=true"] if args.overwrite else [])
        )
        out = run_finetune(recipe)
    except UnlearnError as exc:
        print(f"finetune: error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
