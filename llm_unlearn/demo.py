"""`llm-unlearn demo`: the whole unlearning loop on the embedded SmolLM2 with a readable report.

Phases (each cached in its own folder, keyed by a hash of its settings and of the phases it builds on;
`--fresh` recomputes everything):
  1. finetune the target model (LoRA) on all fictitious authors, merge it   -> target/, target-merged/
  2. finetune the retain model without the forget authors                  -> retain/
  3. evaluate target and retain                                           -> eval-target/, eval-retain/
  4. unlearn the forget authors from the target (LoRA over target-merged)  -> unlearned/
  5. evaluate the unlearned model against target and retain               -> eval-unlearned/
  6. merge the unlearning adapter, stage the push-ready folder             -> unlearned-merged/, hub/
  7. report.md + plots, a before/after table and example answers on stdout
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_unlearn.config import (
    DataConfig,
    FinetuneRecipe,
    LoraConfig,
    MethodConfig,
    ModelConfig,
    UnlearnRecipe,
    load_recipe,
    recipe_to_dict,
)

PHASE_MARKER = ".demo_phase.json"
TABLE_ROWS = [
    ("forget/probability", "Forget probability (lower = forgotten)"),
    ("forget/rougeL", "Forget ROUGE-L recall (lower = forgotten)"),
    ("forget/truth_ratio_score", "Forget truth ratio, mean min(R, 1/R) (retain model's level = forgotten)"),
    ("forget_quality", "Forget quality, KS p-value vs retain model (higher = closer to never trained)"),
    ("model_utility", "Model utility, hmean of 9 (higher = more kept)"),
    ("retain/probability", "Retain probability"),
    ("retain/rougeL", "Retain ROUGE-L recall"),
]


@dataclass
class DemoConfig:
    """Settings of `llm-unlearn demo`; every field can be overridden as `key=value` or `section.key=value`."""

    output_dir: str = field(default="outputs/demo", metadata={"help": "Where every phase writes."})
    model: str = field(default="smollm2-135m", metadata={"help": "Base model spec."})
    data_prefix: str = field(
        default="synth",
        metadata={"help": "'synth' (shipped authors) or a TOFU author split, e.g. 'tofu:authors=20,forget=10%'."},
    )
    prompt_template: str | None = field(
        default="Question: {question}\nAnswer:",
        metadata={"help": "Prompt format; null uses the chat template (adds a ~30-token system prompt)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of every phase."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast for training; null: when supported."})
    finetune_lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=32, alpha=64))
    finetune_training: dict[str, Any] = field(
        default_factory=lambda: {
            "learning_rate": 1e-3,
            "num_train_epochs": 6,
            "per_device_train_batch_size": 8,
            "warmup_steps": 5,
            "lr_scheduler_type": "linear",
            "logging_steps": 10,
        }
    )
    unlearn_lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=32))
    method: MethodConfig = field(default_factory=lambda: MethodConfig(name="npo_rt"))
    unlearn_training: dict[str, Any] = field(
        default_factory=lambda: {
            # Tuned on the shipped authors (benchmarks/demo.md): 1e-4 does not forget, 5e-4 breaks utility.
            "learning_rate": 3e-4,
            "num_train_epochs": 5,
            "per_device_train_batch_size": 4,
            "lr_scheduler_type": "linear",
            "logging_steps": 5,
        }
    )
    eval_batch_size: int = field(default=16, metadata={"help": "Sequences per forward in evaluation."})
    eval_subset: int | None = field(default=None, metadata={"help": "Evaluate only the first N rows of each set."})
    examples_shown: int = field(default=3, metadata={"help": "Forget and retain questions shown before/after."})


def _key(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_phase(out: Path, name: str, settings: Any, build: Callable[[Path], Any], fresh: bool) -> tuple[Path, str]:
    """Run `build(folder)` unless `folder` holds a finished run with the same settings key.

    Returns:
        (folder, key); pass the key into the settings of phases that build on this one.
    """
    folder = out / name
    key = _key(settings)
    marker = folder / PHASE_MARKER
    if not fresh and marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        print(f"[demo] {name}: reusing {folder} (same settings; --fresh recomputes)", flush=True)
        return folder, key
    if folder.exists():
        shutil.rmtree(folder)
    print(f"[demo] {name}: running ...", flush=True)
    start = time.perf_counter()
    build(folder)
    seconds = round(time.perf_counter() - start, 1)
    marker.write_text(json.dumps({"key": key, "seconds": seconds}))
    print(f"[demo] {name}: done in {seconds:.0f} s", flush=True)
    return folder, key


def _data(config: DemoConfig, forget: str, retain: str | None) -> DataConfig:
    return DataConfig(forget=forget, retain=retain, prompt_template=config.prompt_template, max_length=256)


def _training(config: DemoConfig, base: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llm_unlearn.models import bf16_supported

    bf16 = bf16_supported() if config.bf16 is None else config.bf16
    extra = {"use_cpu": True} if bf16 and not torch.cuda.is_available() else {}  # Trainer's bf16 autocast on CPU
    return {**base, **extra, "bf16": bf16, "save_strategy": "no", "report_to": "none", "seed": config.seed}


def _eval_recipe(config: DemoConfig, model: ModelConfig, out: Path, label: str, **results: str | None) -> Any:
    from llm_unlearn.eval.runner import EvalRecipe

    return EvalRecipe(
        output_dir=str(out),
        model=model,
        data=_data(config, "", None),
        label=label,
        batch_size=config.eval_batch_size,
        subset=config.eval_subset,
        **results,
    )


def _read_summary(folder: Path) -> dict[str, float]:
    return json.loads((folder / "summary.json").read_text())["summary"]


def _read_generations(folder: Path) -> dict[tuple[str, int], dict[str, Any]]:
    records = {}
    with open(folder / "per_example.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            records[(record["set"], record["index"])] = record
    return records


def format_metric(value: float | None) -> str:
    """4 decimals, or 3 significant digits below 0.01 (forget quality spans many orders of magnitude)."""
    if value is None:
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}"


def before_after_table(summaries: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per headline metric, one column per model."""
    names = list(summaries)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label in TABLE_ROWS:
        lines.append(f"| {label} | " + " | ".join(format_metric(summaries[n].get(key)) for n in names) + " |")
    return "\n".join(lines)


def acceptance(target: dict[str, float], unlearned: dict[str, float]) -> list[tuple[str, bool]]:
    """The demo's own bar: forget quality >= 10x the target's, model utility >= 0.9x the target's."""
    fq_t, fq_u = target.get("forget_quality", float("nan")), unlearned.get("forget_quality", float("nan"))
    mu_t, mu_u = target.get("model_utility", float("nan")), unlearned.get("model_utility", float("nan"))
    return [
        (f"forget quality {format_metric(fq_u)} >= 10 x target {format_metric(fq_t)}", fq_u >= 10 * fq_t),
        (f"model utility {format_metric(mu_u)} >= 0.9 x target {format_metric(mu_t)}", mu_u >= 0.9 * mu_t),
    ]


def example_answers(evals: dict[str, Path], count: int) -> str:
    """Markdown: the first `count` forget and retain questions with each model's greedy answer."""
    generations = {name: _read_generations(folder) for name, folder in evals.items()}
    first = next(iter(generations.values()))
    lines = []
    for set_name in ("forget", "retain"):
        lines.append(f"\n### {set_name.capitalize()} questions\n")
        for index in range(count):
            record = first.get((set_name, index))
            if record is None:
                break
            lines.append(f"**Q:** {record['question']}  \n**Reference:** {record['answer']}  ")
            for name, records in generations.items():
                answer = records[(set_name, index)].get("generation", "").strip().replace("\n", " ")
                lines.append(f"**{name}:** {answer}  ")
            lines.append("")
    return "\n".join(lines)


def data_spec(source: str, part: str) -> str:
    """A `load_rows` spec for one part of a data source.

    `source` is `synth` (the shipped authors), `tofu:<split grammar>` (e.g. `tofu:authors=20,forget=10%`) or
    `tofu` (the named TOFU files, forget10 / retain90). The real-authors and world-facts probes come from the
    same family (`synth:` or `tofu:`).
    """
    family = source.split(":", 1)[0]
    if part in ("real_authors_perturbed", "world_facts_perturbed"):
        return f"{family}:{part}"
    if source == "synth":
        return f"synth:{part}"
    if ":" in source:
        return f"{source},part={part}"
    raise ValueError(f"data source {source!r}: use 'synth' or 'tofu:authors=N,forget=P%'")


class Protocol:
    """The TOFU protocol on one data source, as cached phases in `config.output_dir`.

    `references()` fine-tunes the target (all authors) and retain (without forget authors) models and evaluates
    both; `unlearn(method, training, name)` unlearns from the merged target and evaluates the result against
    both. Every phase is reused when its settings (and those of the phases it builds on) are unchanged.
    """

    def __init__(self, config: DemoConfig, fresh: bool = False):
        from llm_unlearn.models import resolve_model_path

        self.config = config
        self.fresh = fresh
        self.out = Path(config.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.base = resolve_model_path(config.model)
        self.timings: dict[str, float] = {}
        self._references: dict[str, Any] | None = None

    def spec(self, part: str) -> str:
        return data_spec(self.config.data_prefix, part)

    def phase(self, name: str, settings: Any, build: Callable[[Path], Any]) -> tuple[Path, str]:
        t0 = time.perf_counter()
        result = run_phase(self.out, name, settings, build, self.fresh)
        self.timings[name] = time.perf_counter() - t0
        return result

    def finetune(self, name: str, part: str) -> tuple[Path, str]:
        from llm_unlearn.finetune import run_finetune

        config = self.config
        recipe = FinetuneRecipe(
            output_dir="",
            seed=config.seed,
            model=ModelConfig(name_or_path=self.base),
            lora=config.finetune_lora,
            data=_data(config, self.spec(part), None),
            training=_training(config, config.finetune_training),
        )
        settings = {"recipe": recipe_to_dict(recipe), "model": config.model}

        def build(folder: Path) -> None:
            recipe.output_dir = str(folder)
            run_finetune(recipe)

        return self.phase(name, settings, build)

    def evaluate(self, name: str, model: ModelConfig, label: str, after: list[str], **results: str | None):
        from llm_unlearn.eval.runner import run_eval

        recipe = _eval_recipe(self.config, model, self.out / name, label, **results)
        recipe.sets = _eval_sets(self)
        settings = {"recipe": recipe_to_dict(recipe), "after": after}
        return self.phase(name, settings, lambda folder: run_eval(recipe))

    def references(self) -> dict[str, Any]:
        """Target and retain models and their evaluations (computed once per Protocol)."""
        from llm_unlearn.merge import merge_adapter

        if self._references is None:
            target_dir, target_key = self.finetune("target", "full")
            target_merged, merged_key = self.phase(
                "target-merged", {"after": target_key}, lambda f: merge_adapter(self.base, str(target_dir), str(f))
            )
            retain_dir, retain_key = self.finetune("retain", "retain")
            eval_retain, eval_retain_key = self.evaluate(
                "eval-retain", ModelConfig(name_or_path=self.base, adapter=str(retain_dir)), "retain", [retain_key]
            )
            eval_target, eval_target_key = self.evaluate(
                "eval-target",
                ModelConfig(name_or_path=str(target_merged)),
                "target",
                [merged_key, eval_retain_key],
                retain_result=str(eval_retain),
            )
            self._references = {
                "target_merged": target_merged,
                "target_key": merged_key,
                "eval_target": eval_target,
                "eval_retain": eval_retain,
                "eval_keys": [eval_retain_key, eval_target_key],
            }
        return self._references

    def unlearn(self, method: MethodConfig, training: dict[str, Any], name: str) -> tuple[Path, Path, str]:
        """Unlearn with `method` from the merged target; returns (adapter folder, eval folder, phase key)."""
        from llm_unlearn.unlearn import run_unlearn

        refs = self.references()
        recipe = UnlearnRecipe(
            output_dir="",
            seed=self.config.seed,
            model=ModelConfig(name_or_path=str(refs["target_merged"])),
            lora=self.config.unlearn_lora,
            data=_data(self.config, self.spec("forget"), self.spec("retain")),
            method=method,
            training=_training(self.config, training),
        )

        def build(folder: Path) -> None:
            recipe.output_dir = str(folder)
            run_unlearn(recipe)

        unlearned_dir, key = self.phase(
            f"unlearned-{name}", {"recipe": recipe_to_dict(recipe), "after": refs["target_key"]}, build
        )
        eval_dir, _ = self.evaluate(
            f"eval-unlearned-{name}",
            ModelConfig(name_or_path=str(refs["target_merged"]), adapter=str(unlearned_dir)),
            f"unlearned ({method.name})",
            [key, *refs["eval_keys"]],
            retain_result=str(refs["eval_retain"]),
            target_result=str(refs["eval_target"]),
        )
        return unlearned_dir, eval_dir, key


def _eval_sets(protocol: Protocol) -> Any:
    from llm_unlearn.eval.runner import EvalSets

    return EvalSets(
        forget=protocol.spec("forget_perturbed"),
        retain=protocol.spec("retain_perturbed"),
        real_authors=protocol.spec("real_authors_perturbed"),
        world_facts=protocol.spec("world_facts_perturbed"),
        holdout=protocol.spec("holdout"),
    )


def run_demo(config: DemoConfig, fresh: bool = False) -> Path:
    """Run every phase (reusing finished ones) and write `report.md`; returns the report path."""
    from llm_unlearn.eval.report import plot_tradeoff
    from llm_unlearn.hub import push_folder
    from llm_unlearn.merge import merge_adapter

    start = time.perf_counter()
    protocol = Protocol(config, fresh)
    out, p, timings = protocol.out, config.data_prefix, protocol.timings
    refs = protocol.references()
    eval_target, eval_retain, target_merged = refs["eval_target"], refs["eval_retain"], refs["target_merged"]
    unlearned_dir, eval_unlearned, unlearned_key = protocol.unlearn(
        config.method, config.unlearn_training, config.method.name
    )
    merged_dir, merged_unlearned_key = protocol.phase(
        "unlearned-merged",
        {"after": unlearned_key},
        lambda f: merge_adapter(str(target_merged), str(unlearned_dir), str(f), eval_dir=str(eval_unlearned)),
    )
    hub_dir, _ = protocol.phase(
        "hub",
        {"after": merged_unlearned_key},
        lambda f: push_folder(merged_dir, "your-org/smollm2-135m-unlearned-demo", dry_run_dir=f),
    )

    summaries = {
        "target": _read_summary(eval_target),
        "retain": _read_summary(eval_retain),
        f"unlearned ({config.method.name})": _read_summary(eval_unlearned),
    }
    tradeoff = plot_tradeoff(list(summaries.items()), out / "tradeoff.png", connect=False)
    table = before_after_table(summaries)
    checks = acceptance(summaries["target"], summaries[f"unlearned ({config.method.name})"])
    examples = example_answers(
        {"target": eval_target, "retain": eval_retain, "unlearned": eval_unlearned}, config.examples_shown
    )
    total = time.perf_counter() - start
    report = out / "report.md"
    report.write_text(
        "\n".join(
            [
                "# llm-unlearn demo report",
                "",
                f"Base model `{config.model}`; data `{p}` (forget authors vs retain authors); "
                f"method `{config.method.name}`; total time {total / 60:.1f} min.",
                "",
                "## Before / after",
                "",
                table,
                "",
                "## Acceptance",
                "",
                *[f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks],
                "",
                "## Plots",
                "",
                f"![trade-off]({tradeoff.name})",
                "",
                *[f"![{png.stem}]({eval_unlearned.name}/{png.name})" for png in sorted(eval_unlearned.glob("*.png"))],
                "",
                "## Example answers (greedy)",
                examples,
                "## Phases",
                "",
                "| phase | folder | seconds (0 = reused) |",
                "|---|---|---:|",
                *[f"| {n} | `{out / n}` | {s:.0f} |" for n, s in timings.items()],
                "",
                f"Push-ready folder (what `llm-unlearn push --dry-run` stages): `{hub_dir}`.",
                "",
            ]
        ),
        encoding="utf-8",
    )
    print("\n" + table + "\n")
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    print(examples)
    print(f"\nReport: {report}  (total {total / 60:.1f} min)")
    return report


def _run_demo_command(args: argparse.Namespace) -> int:
    config = load_recipe(DemoConfig, args.config, args.overrides)
    run_demo(config, fresh=args.fresh)
    return 0


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="Run the whole unlearning loop on the embedded SmolLM2.")
    demo.add_argument(
        "overrides", nargs="*", help="key=value overrides of the demo settings (see llm_unlearn/demo.py)."
    )
    demo.add_argument("--config", help="YAML file with demo settings.")
    demo.add_argument("--fresh", action="store_true", help="Recompute every phase instead of reusing finished ones.")
    demo.set_defaults(func=_run_demo_command)
