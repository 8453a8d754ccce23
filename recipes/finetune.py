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

import sys

from llm_unlearn.config import FinetuneRecipe
from llm_unlearn.finetune import run_finetune
from llm_unlearn.launch import run_recipe_main


def main(argv: list[str] | None = None) -> int:
    # setup -> train -> save (the library does the work in run_finetune)
    return run_recipe_main("finetune", FinetuneRecipe, run_finetune, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
