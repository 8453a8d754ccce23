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

import argparse
import sys

from llm_unlearn.config import UnlearnRecipe, load_recipe
from llm_unlearn.errors import UnlearnError
from llm_unlearn.unlearn import run_unlearn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="Unlearn recipe YAML (configs/unlearn/*.yaml).")
    parser.add_argument("--overwrite", action="store_true", help="Allow a non-empty output_dir.")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. method.beta=0.2.")
    args = parser.parse_args(argv)
    try:
        # setup -> train -> save (adapter + unlearn_manifest.json): all in run_unlearn
        recipe = load_recipe(
            UnlearnRecipe, args.config, args.overrides + (["overwrite=true"] if args.overwrite else [])
        )
        out = run_unlearn(recipe)
    except UnlearnError as exc:
        print(f"unlearn: error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
