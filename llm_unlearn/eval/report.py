"""Evaluation outputs people read: the Markdown report and the matplotlib PNG plots. No metric computation here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from llm_unlearn.eval.stats import UTILITY_METRICS, UTILITY_SETS, utility_components

HEADLINE = ("forget_quality", "forget_quality_ks", "model_utility")
SET_ORDER = ("forget", "retain", "real_authors", "world_facts", "holdout")
METRIC_ORDER = ("probability", "rougeL", "truth_ratio_score")
METRIC_NOTES = {
    "forget_quality": "KS-test p-value vs the retain model's forget truth ratios; higher = closer to retain",
    "forget_quality_ks": "KS statistic of the same test; lower = closer to retain",
    "model_utility": "harmonic mean of the 9 retain / real-authors / world-facts components",
    "forget/truth_ratio_score": "mean min(R, 1/R); 1 = cannot tell true from false",
    "privleak": "(AUC - AUC_retain) / AUC_retain x 100; 0 is ideal, > 0 leaks, < 0 over-unlearned",
    "mia": "ROC-AUC forget vs holdout, higher score = member; 0.5 = indistinguishable",
}


def _ordered_keys(summaries: Sequence[Mapping[str, float]]) -> list[str]:
    keys = set().union(*[s.keys() for s in summaries])
    ordered = [k for k in HEADLINE if k in keys]
    ordered += [f"{s}/{m}" for s in SET_ORDER for m in METRIC_ORDER if f"{s}/{m}" in keys]
    ordered += sorted(k for k in keys if k.startswith("mia/"))
    ordered += sorted(k for k in keys if k.startswith("privleak/"))
    return ordered + sorted(k for k in keys if k not in ordered)


def format_value(value: Any) -> str:
    """Four significant digits; scientific for tiny p-values; '—' for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def summary_table(columns: Sequence[tuple[str, Mapping[str, float]]]) -> str:
    """A Markdown table: one row per metric, one column per (label, summary)."""
    keys = _ordered_keys([summary for _, summary in columns])
    lines = [
        "| metric | " + " | ".join(label for label, _ in columns) + " | note |",
        "|---|" + "---:|" * len(columns) + "---|",
    ]
    for key in keys:
        note = METRIC_NOTES.get(key) or METRIC_NOTES.get(key.split("/")[0], "")
        cells = " | ".join(format_value(summary.get(key)) for _, summary in columns)
        lines.append(f"| `{key}` | {cells} | {note} |")
    return "\n".join(lines)


def plot_truth_ratio_histogram(
    model_ratios: Sequence[float], retain_ratios: Sequence[float] | None, path: str | Path, label: str = "model"
) -> Path:
    """Histogram of forget-set truth ratios R (log-scale bins), the evaluated model against the retain model."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    series = [(label, np.asarray(model_ratios, dtype=float))]
    if retain_ratios is not None:
        series.append(("retain model", np.asarray(retain_ratios, dtype=float)))
    finite = np.concatenate([r[np.isfinite(r) & (r > 0)] for _, r in series])
    low, high = (finite.min(), finite.max()) if finite.size else (0.1, 10.0)
    bins = np.geomspace(min(low, 0.9), max(high, 1.1), 30)
    for name, ratios in series:
        ax.hist(ratios[np.isfinite(ratios) & (ratios > 0)], bins=bins, alpha=0.55, label=name)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("truth ratio R = P(perturbed) / P(paraphrased)  (1 = no preference)")
    ax.set_ylabel("forget examples")
    ax.set_title("Forget-set truth ratios")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_utility_components(summaries: Sequence[tuple[str, Mapping[str, float]]], path: str | Path) -> Path:
    """Grouped bars of the nine model-utility components, one bar colour per (label, summary)."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    names = [f"{s}\n{m}" for s in UTILITY_SETS for m in UTILITY_METRICS]
    x = np.arange(len(names))
    width = 0.8 / max(len(summaries), 1)
    for i, (label, summary) in enumerate(summaries):
        values = np.nan_to_num(np.array(list(utility_components(summary).values())), nan=0.0)
        mu = summary.get("model_utility", float("nan"))
        ax.bar(x + (i - (len(summaries) - 1) / 2) * width, values, width, label=f"{label} (MU {format_value(mu)})")
    ax.set_xticks(x, names, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("value")
    ax.set_title("Model utility components")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_tradeoff(results: Sequence[tuple[str, Mapping[str, float]]], path: str | Path, connect: bool = True) -> Path:
    """Forget quality (log scale) against model utility, one labelled point per result.

    Args:
        results: (label, summary) pairs.
        path: PNG path.
        connect: join the points in order (checkpoints of one run); False for unrelated models (methods).
    """
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    points = [
        (label, s.get("model_utility", float("nan")), s.get("forget_quality", float("nan"))) for label, s in results
    ]
    points = [(lab, mu, max(fq, 1e-300)) for lab, mu, fq in points if not (math.isnan(mu) or math.isnan(fq))]
    if points:
        ax.plot([p[1] for p in points], [p[2] for p in points], "o-" if connect else "o")
        for label, mu, fq in points:
            ax.annotate(str(label), (mu, fq), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value)")
    ax.set_title("Forget quality vs model utility")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def write_report(
    out_dir: str | Path,
    summary: Mapping[str, float],
    label: str = "model",
    target: Mapping[str, float] | None = None,
    retain: Mapping[str, float] | None = None,
    forget_ratios: Sequence[float] | None = None,
    retain_forget_ratios: Sequence[float] | None = None,
    header: str = "",
) -> dict[str, Path]:
    """Write `report.md` and its PNGs into `out_dir`.

    Args:
        out_dir: existing folder.
        summary: the evaluated model's summary.
        label: its column name.
        target, retain: summaries of the target (before unlearning) and retain models, shown side by side.
        forget_ratios, retain_forget_ratios: per-example forget truth ratios for the histogram.
        header: Markdown put under the title (model, adapter, data specs).

    Returns:
        {"report": report.md, "truth_ratio_hist": ..., "utility": ...} for the files written.
    """
    out = Path(out_dir)
    columns = [(label, summary)]
    if target is not None:
        columns.append(("target", target))
    if retain is not None:
        columns.append(("retain", retain))
    files: dict[str, Path] = {}
    lines = ["# Evaluation report", "", header, "", summary_table(columns), ""]
    if forget_ratios is not None and len(forget_ratios):
        files["truth_ratio_hist"] = plot_truth_ratio_histogram(
            forget_ratios, retain_forget_ratios, out / "truth_ratio_forget.png", label
        )
        lines.append("![forget truth ratios](truth_ratio_forget.png)")
    if any("model_utility" in s or "retain/probability" in s for _, s in columns):
        files["utility"] = plot_utility_components(columns, out / "utility_components.png")
        lines.append("![utility components](utility_components.png)")
    if len(columns) > 1 and all("forget_quality" in s and "model_utility" in s for _, s in columns):
        files["tradeoff"] = plot_tradeoff(columns, out / "tradeoff.png")
        lines.append("![trade-off](tradeoff.png)")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    files["report"] = out / "report.md"
    return files
