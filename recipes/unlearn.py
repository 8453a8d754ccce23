"""Recipe: unlearn a forget set with a registered method (GA, GradDiff, NPO, SimNPO, IdkNLL, IdkDPO, ...).

Single process:
    python recipes/unlearn.py --config configs/unlearn/npo_rt.yaml [section.key=value ...]
Several processes (DDP, DeepSpeed ZeRO-2/3, FSDP):
    accelerate launch --config_file configs/accelerate/ddp.yaml recipes/unlearn.py --config configs/unlearn/npo_rt.yaml
On a CPU-only machine (2 processes over gloo):
    accelerate launch --config_file configs/accelerate/cpu_ddp.yaml recipes/unlearn.py --config ...
The same as `llm-unlearn unlearn CONFIG [section.key=value ...] [--overwrite]`; `llm-unlearn methods` lists methods.
"""

from __future__ import annotations

import sys

from llm_unlearn.config import UnlearnRecipe
from llm_unlearn.launch import run_recipe_main
from llm_unlearn.unlearn import run_unlearn


def main(argv: list[str] | None = None) -> int:
    # setup -> train -> save (the library does the work in run_unlearn)
    return run_recipe_main("unlearn", UnlearnRecipe, run_unlearn, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
