"""Benchmark: examples/second of the full TOFU-style evaluation, batched vs one example at a time.

Default workload (TOFU forget01-sized): 40 rows of tofu:forget01_perturbed, the first 40 of tofu:retain_perturbed,
tofu:real_authors_perturbed (100) and tofu:world_facts_perturbed (117), on the built-in SmolLM2-135M-Instruct.
Each row costs one forward per candidate answer (answer + paraphrase + perturbed answers, packed in batches)
plus one greedy generation. Writes benchmarks/eval.json and benchmarks/eval.md.

    python scripts/benchmark_eval.py                            # full workload
    python scripts/benchmark_eval.py --rows 8 --max-new-tokens 16   # quick run on a busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llm_unlearn.config import DataConfig, ModelConfig
from llm_unlearn.data.collate import PromptFormatter
from llm_unlearn.data.sources import load_rows
from llm_unlearn.eval.generation import generate_answers
from llm_unlearn.eval.probes import probe_rows
from llm_unlearn.eval.runner import to_eval_device
from llm_unlearn.models import load_model_and_tokenizer

SETS = {
    "forget": ("tofu:forget01_perturbed", 40),
    "retain": ("tofu:retain_perturbed", 40),
    "real_authors": ("tofu:real_authors_perturbed", None),
    "world_facts": ("tofu:world_facts_perturbed", None),
}


def run_mode(model, formatter, sets, batch_size: int, max_new_tokens: int) -> dict:
    """Probes (with MIA statistics on the forget set) + generation on every set; timings per phase."""
    probe_s = gen_s = 0.0
    avg_nll = {}
    for name, rows in sets.items():
        start = time.perf_counter()
        values = probe_rows(model, formatter, rows, batch_size=batch_size, mia=name == "forget", desc=f"probe {name}")
        probe_s += time.perf_counter() - start
        avg_nll[name] = values["avg_nll"]
        start = time.perf_counter()
        generate_answers(model, formatter, [r["question"] for r in rows], batch_size, max_new_tokens, f"gen {name}")
        gen_s += time.perf_counter() - start
    n = sum(len(r) for r in sets.values())
    sequences = sum(
        1 + bool(r.get("paraphrased_answer")) + len(r.get("perturbed_answer") or [])
        for rs in sets.values()
        for r in rs
    )
    return {
        "batch_size": batch_size,
        "examples": n,
        "sequences_scored": sequences,
        "probe_s": round(probe_s, 2),
        "generation_s": round(gen_s, 2),
        "total_s": round(probe_s + gen_s, 2),
        "examples_per_s": round(n / (probe_s + gen_s), 3),
        "_avg_nll": avg_nll,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="auto", help="auto = bf16 on a GPU that supports it, else float32.")
    parser.add_argument("--rows", type=int, default=None, help="Cap every set at this many rows (quick runs).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU).")
    parser.add_argument("--out", default="benchmarks")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model_config = ModelConfig(name_or_path=args.model, dtype=args.dtype)
    model, tokenizer = load_model_and_tokenizer(model_config, trainable=False)
    model = to_eval_device(model, model_config)
    data = DataConfig(max_length=512)
    formatter = PromptFormatter(tokenizer, data.prompt_template, data.max_length)
    sets = {}
    for name, (spec, limit) in SETS.items():
        rows = load_rows(spec, data, role=name)
        cap = min(x for x in (limit, args.rows, len(rows)) if x is not None)
        sets[name] = rows[:cap]

    results = {}
    for label, batch_size in (("batched", args.batch_size), ("one at a time", 1)):
        results[label] = run_mode(model, formatter, sets, batch_size, args.max_new_tokens)
    diff = max(
        float(np.max(np.abs(results["batched"]["_avg_nll"][k] - results["one at a time"]["_avg_nll"][k])))
        for k in sets
    )
    for r in results.values():
        r.pop("_avg_nll")
    speedup = results["batched"]["examples_per_s"] / results["one at a time"]["examples_per_s"]
    device = next(model.parameters()).device
    report = {
        "model": args.model,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "max_new_tokens": args.max_new_tokens,
        "rows": {k: len(v) for k, v in sets.items()},
        "results": results,
        "speedup": round(speedup, 2),
        "max_abs_avg_nll_diff_batched_vs_single": diff,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Evaluation throughput",
        "",
        f"Model `{args.model}` ({report['dtype']}) on {report['device']}, {report['threads']} threads; "
        f"sets {report['rows']}; greedy generation up to {args.max_new_tokens} new tokens; {report['date']}.",
        "",
        "| mode | batch | examples | sequences scored | probes s | generation s | total s | examples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['batch_size']} | {r['examples']} | {r['sequences_scored']} | {r['probe_s']} | "
            f"{r['generation_s']} | {r['total_s']} | {r['examples_per_s']} |"
        )
    lines += [
        "",
        f"Batched is {report['speedup']}x faster. Largest |mean NLL| difference batched vs one at a time: {diff:.2e}.",
        "",
        "Reproduce: `python scripts/benchmark_eval.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])) + "`",
    ]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
