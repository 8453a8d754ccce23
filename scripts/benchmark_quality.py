"""TOFU quality benchmark: target + retain models, then every registered method, on one data source.

Writes `<results>.md` (forget quality, model utility, forget ROUGE-L, forget truth ratio, wall time per method,
with the target and retain rows), `<results>.json` and a trade-off plot `<results>_tradeoff.png`.

CPU-sized run on 20 real TOFU authors with 10% (2 authors) forgotten:
    .venv/bin/python scripts/benchmark_quality.py --source "tofu:authors=20,forget=10%" \
        --out outputs/quality-tofu20 --results benchmarks/quality_tofu20
Full TOFU forget10 on a GPU:
    python scripts/benchmark_quality.py --source "tofu:forget=10%" --out outputs/quality-tofu --results \
        benchmarks/quality_tofu_full model=<your 7B model> eval_batch_size=32
Every phase is cached in --out (keyed by its settings): rerunning after a crash resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llm_unlearn.config import MethodConfig, load_recipe
from llm_unlearn.demo import DemoConfig, Protocol, _read_summary, format_metric
from llm_unlearn.eval.report import plot_tradeoff
from llm_unlearn.methods import list_methods

COLUMNS = [
    ("forget_quality", "forget quality"),
    ("model_utility", "model utility"),
    ("forget/rougeL", "forget ROUGE-L"),
    ("forget/probability", "forget prob."),
    ("forget/truth_ratio_score", "forget truth ratio"),
    ("retain/rougeL", "retain ROUGE-L"),
]


def verdict(summary: dict[str, float], target: dict[str, float]) -> str:
    """One word on the row: did it forget (forget quality >= 10x target) and keep utility (>= 0.9x target)?"""
    forgot = summary.get("forget_quality", 0.0) >= 10 * target.get("forget_quality", 1.0)
    kept = summary.get("model_utility", 0.0) >= 0.9 * target.get("model_utility", 1.0)
    return {(True, True): "forgets, keeps utility", (True, False): "forgets, BREAKS utility"}.get(
        (forgot, kept), "does NOT forget" + ("" if kept else ", breaks utility")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="DemoConfig overrides, e.g. unlearn_training.learning_rate=1e-4")
    parser.add_argument("--source", default="tofu:authors=20,forget=10%", help="Data source (see demo.data_spec).")
    parser.add_argument("--methods", default="all", help="Comma-separated method names, or 'all'.")
    parser.add_argument("--out", default="outputs/quality", help="Phase cache folder.")
    parser.add_argument("--results", default="benchmarks/quality", help="Results path without extension.")
    args = parser.parse_args(argv)

    config = load_recipe(DemoConfig, None, [f"data_prefix={args.source}", f"output_dir={args.out}", *args.overrides])
    names = list_methods() if args.methods == "all" else args.methods.split(",")
    protocol = Protocol(config)
    refs = protocol.references()
    rows = [
        ("target", _read_summary(refs["eval_target"]), None),
        ("retain", _read_summary(refs["eval_retain"]), None),
    ]
    for name in names:
        _, eval_dir, _ = protocol.unlearn(MethodConfig(name=name), config.unlearn_training, name)
        marker = json.loads((protocol.out / f"unlearned-{name}" / ".demo_phase.json").read_text())
        rows.append((name, _read_summary(eval_dir), marker["seconds"]))

    target = rows[0][1]
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    header = "| model | " + " | ".join(label for _, label in COLUMNS) + " | unlearn wall time (s) | verdict |"
    lines = [header, "|---|" + "---:|" * (len(COLUMNS) + 1) + "---|"]
    for name, summary, seconds in rows:
        cells = " | ".join(format_metric(summary.get(key)) for key, _ in COLUMNS)
        wall = f"{seconds:.0f}" if seconds is not None else "-"
        word = verdict(summary, target) if seconds is not None else "reference"
        lines.append(f"| {name} | {cells} | {wall} | {word} |")
    command = "python scripts/benchmark_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = "\n".join(
        [
            f"# Quality benchmark: `{args.source}`",
            "",
            f"Reproduce: `{command}`",
            "",
            f"Base model `{config.model}`; fine-tuning LoRA r={config.finetune_lora.r}, "
            f"{json.dumps(config.finetune_training)}; unlearning LoRA r={config.unlearn_lora.r}, "
            f"{json.dumps(config.unlearn_training)}; method hyperparameters at their registry defaults "
            f"(`llm-unlearn methods`); bf16 autocast for training where supported, float32 evaluation.",
            "",
            *lines,
            "",
            f"![trade-off]({results.name}_tradeoff.png)",
            "",
        ]
    )
    results.with_suffix(".md").write_text(text, encoding="utf-8")
    payload = {"source": args.source, "command": command, "rows": [list(r) for r in rows]}
    results.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    plot_tradeoff([(n, s) for n, s, _ in rows], results.parent / f"{results.name}_tradeoff.png", connect=False)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
