"""Recipe: TOFU-style evaluation (probability, truth ratio, ROUGE-L, forget quality, model utility, MIA) + report.

Single process:
    python recipes/evaluate.py --config configs/eval/synth.yaml model.adapter=outputs/unlearn/npo_rt
Under accelerate (several processes): only the main process evaluates and writes; the others exit at once.
    accelerate launch --config_file configs/accelerate/ddp.yaml recipes/evaluate.py --config configs/eval/tofu_forget01.yaml
The same as `llm-unlearn eval CONFIG [section.key=value ...] [--overwrite]`.
Writes summary.json, per_example.jsonl, report.md and PNG plots into output_dir.
"""

from __future__ import annotations

import argparse
import json
import sys

from llm_unlearn.config import load_recipe
from llm_unlearn.errors import UnlearnError
from llm_unlearn.eval.runner import EvalRecipe, run_eval


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="Eval recipe YAML (configs/eval/...).")
    parser.add_argument("--overwrite", action="store_true", help="Allow a non-empty output_dir.")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides.")
    args = parser.parse_args(argv)
    try:
        # setup -> evaluate -> write: all in run_eval
        recipe = load_recipe(EvalRecipe, args.config, args.overrides + (["overwrite=true"] if args.overwrite else []))
        summary = run_eval(recipe)
    except UnlearnError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    if summary:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
