"""Recipe: TOFU-style evaluation (probability, truth ratio, ROUGE-L, forget quality, model utility, MIA) + report.

Single process:
    python recipes/evaluate.py --config configs/eval/synth.yaml model.adapter=outputs/unlearn/npo_rt
Under accelerate (several processes): only the main process evaluates and writes; the others exit at once.
    accelerate launch --config_file configs/accelerate/ddp.yaml recipes/evaluate.py --config configs/eval/tofu_forget01.yaml
The same as `llm-unlearn eval CONFIG [section.key=value ...] [--overwrite]`.
Writes summary.json, per_example.jsonl, report.md and PNG plots into output_dir.
"""

from __future__ import annotations

import json
import sys

from llm_unlearn.eval.runner import EvalRecipe, run_eval
from llm_unlearn.launch import run_recipe_main


def evaluate(recipe: EvalRecipe) -> str:
    """setup -> evaluate -> write (in run_eval); the summary as JSON for the terminal."""
    summary = run_eval(recipe)
    return json.dumps(summary, indent=2, sort_keys=True, default=str) if summary else ""


def main(argv: list[str] | None = None) -> int:
    return run_recipe_main("eval", EvalRecipe, evaluate, argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
