"""Evaluate a model on the configured sets and write the outputs; the `llm-unlearn eval` subcommand.

`evaluate_model` works on a model already in memory (demo, callback); `run_eval` is the recipe: load the model
(base, base + adapter, or merged), load the sets, evaluate, read the retain / target results, write
`summary.json`, `per_example.jsonl`, `report.md` and the PNGs.

Several processes (`accelerate launch`): evaluation runs on the main process only; the other ranks return
without evaluating. The sets are small (TOFU's largest split is 400 rows) and a single process keeps the
per-example order and the output files simple.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm_unlearn.config import DataConfig, ModelConfig, load_recipe, recipe_to_dict
from llm_unlearn.data.collate import PromptFormatter
from llm_unlearn.errors import ConfigError, DataError
from llm_unlearn.eval.generation import generate_answers, rouge_l_recall
from llm_unlearn.eval.probes import probe_rows
from llm_unlearn.eval.report import plot_tradeoff, summary_table, write_report
from llm_unlearn.eval.stats import FORGET, HOLDOUT, example_truth_ratios, summarize

SUMMARY_FILE = "summary.json"
PER_EXAMPLE_FILE = "per_example.jsonl"
SET_NAMES = ("forget", "retain", "real_authors", "world_facts", "holdout")


@dataclass
class EvalSets:
    """Data specs of the evaluation sets (any `load_rows` spec); null skips a set."""

    forget: str | None = field(
        default="synth:forget_perturbed",
        metadata={"help": "Forget set with paraphrased/perturbed answers, e.g. tofu:forget01_perturbed."},
    )
    retain: str | None = field(
        default="synth:retain_perturbed", metadata={"help": "Retain set, e.g. tofu:retain_perturbed."}
    )
    real_authors: str | None = field(
        default="synth:real_authors_perturbed",
        metadata={"help": "Real-authors probe, e.g. tofu:real_authors_perturbed."},
    )
    world_facts: str | None = field(
        default="synth:world_facts_perturbed", metadata={"help": "World-facts probe, e.g. tofu:world_facts_perturbed."}
    )
    holdout: str | None = field(
        default="synth:holdout",
        metadata={
            "help": "Never-trained rows from the forget distribution, for membership inference; null skips MIA."
        },
    )


@dataclass
class EvalRecipe:
    """Evaluation recipe: `llm-unlearn eval CONFIG` / `python recipes/evaluate.py --config CONFIG`."""

    output_dir: str = field(default="outputs/eval", metadata={"help": "Where summary/per-example/report are written."})
    overwrite: bool = field(default=False, metadata={"help": "Allow writing into a non-empty output_dir."})
    model: ModelConfig = field(default_factory=ModelConfig)
    sets: EvalSets = field(default_factory=EvalSets)
    data: DataConfig = field(
        default_factory=DataConfig,
        metadata={
            "help": "Formatting (prompt_template, max_length), tofu_dir and column keys; its forget/retain "
            "specs are not used here (see `sets`)."
        },
    )
    retain_result: str | None = field(
        default=None,
        metadata={"help": "Output folder of the retain model's eval on the same sets (forget quality, privleak)."},
    )
    target_result: str | None = field(
        default=None, metadata={"help": "Output folder of the target (pre-unlearning) model's eval, shown alongside."}
    )
    label: str | None = field(default=None, metadata={"help": "Column name of this model in the report."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass (and prompts per generate)."})
    generate: bool = field(default=True, metadata={"help": "Greedy generation + ROUGE-L (the slowest part)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation length limit."})
    subset: int | None = field(default=None, metadata={"help": "Evaluate only the first N rows of each set."})
    mia_k: float = field(default=0.4, metadata={"help": "k of Min-K% and Min-K%++ (fraction of tokens)."})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.subset is not None and self.subset < 1:
            raise ConfigError(f"subset must be >= 1 or null, got {self.subset}")
        if not 0 < self.mia_k <= 1:
            raise ConfigError(f"mia_k must be in (0, 1], got {self.mia_k}")


@dataclass
class EvalResult:
    """What `evaluate_model` returns.

    Attributes:
        summary: flat summary numbers (see `stats.summarize`).
        per_example: {set: {key: [N] arrays}} — the input of `stats.summarize`.
        rows: {set: rows evaluated} (questions and answers, for per_example.jsonl).
        generations: {set: greedy answers} where generation ran.
        seconds: wall time of the evaluation.
    """

    summary: dict[str, float]
    per_example: dict[str, dict[str, Any]]
    rows: dict[str, list[dict[str, Any]]]
    generations: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def num_examples(self) -> int:
        return sum(len(r) for r in self.rows.values())


def evaluate_model(
    model: Any,
    tokenizer: Any,
    sets: Mapping[str, Sequence[dict[str, Any]]],
    config: EvalRecipe | None = None,
    retain: Mapping[str, Mapping[str, Any]] | None = None,
    formatter: PromptFormatter | None = None,
) -> EvalResult:
    """Evaluate a model in memory on row sets.

    Args:
        model: causal LM (base, peft-wrapped or merged); left in the train/eval mode it came in.
        tokenizer: its tokenizer (EOS = end of turn, pad set).
        sets: {set name: rows}; names "forget", "retain", "real_authors", "world_facts", "holdout" pick the formulas.
        config: batch size, generation, subset, MIA k, prompt format (EvalRecipe defaults when None).
        retain: the retain model's per-example values (from `load_result`), for forget quality and privleak.
        formatter: the training formatter; default built from `config.data`.

    Returns:
        EvalResult with per-example values and the summary.
    """
    config = config or EvalRecipe()
    formatter = formatter or PromptFormatter(
        tokenizer, config.data.prompt_template, config.data.max_length, config.data.truncation
    )
    start = time.perf_counter()
    per_example: dict[str, dict[str, Any]] = {}
    generations: dict[str, list[str]] = {}
    used_rows: dict[str, list[dict[str, Any]]] = {}
    do_mia = FORGET in sets and HOLDOUT in sets
    for name, rows in sets.items():
        rows = list(rows)[: config.subset] if config.subset else list(rows)
        if not rows:
            raise DataError(f"evaluation set '{name}' is empty")
        used_rows[name] = rows
        values = probe_rows(
            model,
            formatter,
            rows,
            batch_size=config.batch_size,
            mia=do_mia and name in (FORGET, HOLDOUT),
            mia_k=config.mia_k,
            desc=f"probe {name}",
        )
        if config.generate and name != HOLDOUT:
            generations[name] = generate_answers(
                model,
                formatter,
                [r["question"] for r in rows],
                config.batch_size,
                config.max_new_tokens,
                f"generate {name}",
            )
            values["rougeL"] = rouge_l_recall(generations[name], [r["answer"] for r in rows])
        per_example[name] = values
    summary = summarize(per_example, retain)
    return EvalResult(summary, per_example, used_rows, generations, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# Saved results
# --------------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    """numpy -> plain JSON values; NaN -> null."""
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def per_example_records(result: EvalResult) -> list[dict[str, Any]]:
    """One JSON-ready record per (set, example): text, generation, every per-example value, truth ratio."""
    records = []
    for name, values in result.per_example.items():
        ratios = None
        if values.get("perturbed_avg_nll") is not None and any(len(r) for r in values["perturbed_avg_nll"]):
            ratios = example_truth_ratios(values)
        for i, row in enumerate(result.rows[name]):
            record: dict[str, Any] = {"set": name, "index": i, "question": row["question"], "answer": row["answer"]}
            if row.get("source"):
                record["source"] = row["source"]
            if name in result.generations:
                record["generation"] = result.generations[name][i]
            for key, column in values.items():
                record[key] = _json_value(column[i])
            if ratios is not None:
                record["truth_ratio"] = _json_value(ratios[i])
            records.append(record)
    return records


def save_result(result: EvalResult, out_dir: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write `summary.json` (summary + `extra` under "meta") and `per_example.jsonl` into an existing folder."""
    out = Path(out_dir)
    payload = {"summary": _json_value_dict(result.summary), "meta": dict(extra or {})}
    payload["meta"].setdefault("num_examples", {k: len(v) for k, v in result.rows.items()})
    payload["meta"].setdefault("seconds", round(result.seconds, 3))
    (out / SUMMARY_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    with open(out / PER_EXAMPLE_FILE, "w", encoding="utf-8") as handle:
        for record in per_example_records(result):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out


def _json_value_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _json_value(v) for k, v in data.items()}


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def load_result(folder: str | Path) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Read a saved evaluation: (summary, per-example values in the `stats.summarize` layout).

    Raises:
        DataError: naming the folder/file and line when something is missing or malformed.
    """
    folder = Path(folder)
    summary_path, records_path = folder / SUMMARY_FILE, folder / PER_EXAMPLE_FILE
    if not summary_path.is_file():
        raise DataError(f"{folder}: no {SUMMARY_FILE}; is this the output_dir of an `llm-unlearn eval` run?")
    try:
        summary = {k: _nan(v) for k, v in json.loads(summary_path.read_text(encoding="utf-8"))["summary"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{summary_path}: malformed summary ({exc})") from None
    columns: dict[str, dict[str, list[Any]]] = {}
    if records_path.is_file():
        with open(records_path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                    name = record["set"]
                except (json.JSONDecodeError, KeyError) as exc:
                    raise DataError(f"{records_path} line {line_no}: malformed record ({exc})") from None
                target = columns.setdefault(name, {})
                for key, value in record.items():
                    if key in (
                        "avg_nll",
                        "paraphrased_avg_nll",
                        "num_tokens",
                        "rougeL",
                        "truth_ratio",
                        "question",
                    ) or (key.startswith("mia/")):
                        target.setdefault(key, []).append(value if key == "question" else _nan(value))
                    elif key == "perturbed_avg_nll":
                        target.setdefault(key, []).append(np.array([_nan(v) for v in value], dtype=np.float64))
    per_example = {
        name: {
            k: (v if k in ("perturbed_avg_nll", "question") else np.array(v, dtype=np.float64))
            for k, v in cols.items()
        }
        for name, cols in columns.items()
    }
    return summary, per_example


def _check_same_forget(model_rows: Sequence[dict[str, Any]], retain: Mapping[str, Any], where: str) -> None:
    """The retain result must come from the same forget split (same questions, same order)."""
    questions = list(retain.get("question", []))
    ours = [r["question"] for r in model_rows]
    if questions and questions != ours:
        raise DataError(
            f"{where}: its forget set ({len(questions)} rows) differs from this run's ({len(ours)} rows); "
            "evaluate the retain model on the same forget spec and subset"
        )


# --------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------


def load_sets(recipe: EvalRecipe) -> dict[str, list[dict[str, Any]]]:
    """Resolve every non-null spec of `recipe.sets` with `llm_unlearn.data.sources.load_rows`."""
    from llm_unlearn.data.sources import load_rows

    sets = {}
    for name in SET_NAMES:
        spec = getattr(recipe.sets, name)
        if spec:
            sets[name] = load_rows(spec, recipe.data, role=name)
    if not sets:
        raise ConfigError("sets: every evaluation set is null; give at least one spec")
    return sets


def to_eval_device(model: Any, config: ModelConfig) -> Any:
    """Move a CPU-loaded model to the GPU when there is one (4-bit models are placed by bitsandbytes already)."""
    import torch

    if torch.cuda.is_available() and config.quantization is None and next(model.parameters()).device.type == "cpu":
        return model.to("cuda")
    return model


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def run_eval(recipe: EvalRecipe) -> dict[str, float]:
    """Evaluate `recipe.model` on `recipe.sets` and write the outputs into `recipe.output_dir`.

    Returns:
        The summary (empty on non-main processes, which do not evaluate).
    """
    from llm_unlearn.models import load_model_and_tokenizer, resolve_model_path
    from llm_unlearn.outputs import prepare_output_dir

    if not _is_main_process():
        return {}
    protected = [resolve_model_path(recipe.model.name_or_path), recipe.model.adapter]
    out = prepare_output_dir(recipe.output_dir, recipe.overwrite, protected=[p for p in protected if p])
    retain_summary = retain_per_example = target_summary = None
    if recipe.retain_result:
        retain_summary, retain_per_example = load_result(recipe.retain_result)
    if recipe.target_result:
        target_summary, _ = load_result(recipe.target_result)
    sets = load_sets(recipe)
    model, tokenizer = load_model_and_tokenizer(recipe.model, None, trainable=False)
    model = to_eval_device(model, recipe.model)
    if retain_per_example and FORGET in retain_per_example and FORGET in sets:
        forget_rows = sets[FORGET][: recipe.subset] if recipe.subset else sets[FORGET]
        _check_same_forget(forget_rows, retain_per_example[FORGET], str(recipe.retain_result))
    result = evaluate_model(model, tokenizer, sets, recipe, retain_per_example)
    meta = {"recipe": recipe_to_dict(recipe), "examples_per_second": round(result.num_examples / result.seconds, 3)}
    save_result(result, out, meta)
    header = f"Model `{recipe.model.name_or_path}`" + (
        f" + adapter `{recipe.model.adapter}`" if recipe.model.adapter else ""
    )
    header += "; sets: " + ", ".join(
        f"{k} = `{getattr(recipe.sets, k)}` ({len(v)} rows)" for k, v in result.rows.items()
    )
    retain_ratios = None
    if retain_per_example and FORGET in retain_per_example and "perturbed_avg_nll" in retain_per_example[FORGET]:
        retain_ratios = example_truth_ratios(retain_per_example[FORGET])
    forget_ratios = None
    if FORGET in result.per_example and any(len(r) for r in result.per_example[FORGET]["perturbed_avg_nll"]):
        forget_ratios = example_truth_ratios(result.per_example[FORGET])
    write_report(
        out,
        result.summary,
        label=recipe.label or Path(recipe.model.adapter or recipe.model.name_or_path).name,
        target=target_summary,
        retain=retain_summary,
        forget_ratios=forget_ratios,
        retain_forget_ratios=retain_ratios,
        header=header,
    )
    return result.summary


def compare_results(folders: Sequence[str | Path], out_dir: str | Path, overwrite: bool = False) -> Path:
    """Side-by-side table and forget-quality vs model-utility curve of several saved evaluations.

    Args:
        folders: eval output folders (checkpoints or methods, in the order the curve should join them).
        out_dir: where `compare.md` and `tradeoff.png` are written.
        overwrite: allow a non-empty `out_dir`.

    Returns:
        The path of `compare.md`.
    """
    from llm_unlearn.outputs import prepare_output_dir

    if len(folders) < 2:
        raise ConfigError("--compare needs at least two eval output folders")
    columns = [(Path(folder).name, load_result(folder)[0]) for folder in folders]
    out = prepare_output_dir(out_dir, overwrite)
    plot_tradeoff(columns, out / "tradeoff.png")
    lines = ["# Evaluation comparison", "", summary_table(columns), "", "![trade-off](tradeoff.png)", ""]
    (out / "compare.md").write_text("\n".join(lines), encoding="utf-8")
    return out / "compare.md"


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def recipe_from_args(args: argparse.Namespace) -> EvalRecipe:
    """Build the recipe from `eval CONFIG k=v ...` or from the `--model/--adapter/--data/--out` flags."""
    overrides = list(args.overrides or [])
    if args.config and "=" in args.config and not Path(args.config).exists():
        args.config, overrides = None, [args.config, *overrides]  # `eval --model X subset=3`: no config file
    if args.model:
        overrides.append(f"model.name_or_path={args.model}")
    if args.adapter:
        overrides.append(f"model.adapter={args.adapter}")
    for item in args.data or []:
        if "=" not in item:
            raise ConfigError(f"--data {item!r}: expected SET=SPEC with SET one of {', '.join(SET_NAMES)}")
        name, spec = item.split("=", 1)
        if name not in SET_NAMES:
            raise ConfigError(f"--data {item!r}: unknown set '{name}'; one of {', '.join(SET_NAMES)}")
        overrides.append(f"sets.{name}={spec or 'null'}")
    for flag, key in (("out", "output_dir"), ("retain_result", "retain_result"), ("target_result", "target_result")):
        if getattr(args, flag):
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.subset:
        overrides.append(f"subset={args.subset}")
    if args.no_generate:
        overrides.append("generate=false")
    if args.overwrite:
        overrides.append("overwrite=true")
    if args.config is None and not args.model:
        raise ConfigError("eval: give a CONFIG file or --model SPEC")
    return load_recipe(EvalRecipe, args.config, overrides)


def _run_eval_command(args: argparse.Namespace) -> int:
    if args.compare:
        if not args.out:
            raise ConfigError("eval --compare: give --out DIR for compare.md and tradeoff.png")
        print(f"wrote {compare_results(args.compare, args.out, args.overwrite)}")
        return 0
    recipe = recipe_from_args(args)
    summary = run_eval(recipe)
    if summary:
        for key in ("forget_quality", "model_utility", "forget/truth_ratio_score", "mia/min_k_pp_auc"):
            if key in summary:
                print(f"{key}: {summary[key]:.4g}")
        print(f"wrote {recipe.output_dir}/{SUMMARY_FILE}, {PER_EXAMPLE_FILE}, report.md")
    return 0


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    """`llm-unlearn eval CONFIG [k=v ...]`, `llm-unlearn eval --model SPEC [--adapter DIR] --data SET=SPEC --out DIR`,
    or `llm-unlearn eval --compare DIR DIR ... --out DIR`."""
    parser = subparsers.add_parser(
        "eval",
        help="TOFU-style evaluation: probabilities, truth ratio, ROUGE-L, forget quality, model utility, MIA.",
        description="Evaluate a model (optionally + adapter) and write summary.json, per_example.jsonl, report.md "
        "and plots. Either a CONFIG file (configs/eval/*.yaml) with key=value overrides, or flags.",
    )
    parser.add_argument("config", nargs="?", default=None, help="Eval recipe YAML (configs/eval/...).")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. subset=20.")
    parser.add_argument("--model", help="Model spec: folder, hub id, or smollm2-135m.")
    parser.add_argument("--adapter", help="peft adapter folder loaded on top of --model.")
    parser.add_argument(
        "--data", action="append", metavar="SET=SPEC", help="e.g. forget=tofu:forget01_perturbed (repeatable)."
    )
    parser.add_argument("--out", help="Output folder (output_dir).")
    parser.add_argument("--retain-result", help="Eval output folder of the retain model.")
    parser.add_argument("--target-result", help="Eval output folder of the target model.")
    parser.add_argument("--subset", type=int, help="Only the first N rows of each set.")
    parser.add_argument("--no-generate", action="store_true", help="Skip generation and ROUGE-L.")
    parser.add_argument("--overwrite", action="store_true", help="Allow a non-empty output folder.")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="DIR",
        help="Instead of evaluating: tabulate saved eval folders and plot their trade-off curve into --out.",
    )
    parser.set_defaults(func=_run_eval_command)
