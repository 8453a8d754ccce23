"""Tests of the Markdown report and the PNG plots (files written, table layout, value formatting)."""

from __future__ import annotations

import math

import numpy as np

from llm_unlearn.eval.report import format_value, plot_tradeoff, summary_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _summary(fq: float, mu: float) -> dict[str, float]:
    s = {"forget_quality": fq, "model_utility": mu, "forget/truth_ratio_score": 0.5, "privleak/min_k_pp": -3.0}
    for name in ("retain", "real_authors", "world_facts"):
        s.update({f"{name}/probability": 0.9, f"{name}/rougeL": 0.8, f"{name}/truth_ratio_score": 0.4})
    return s


def test_format_value():
    assert format_value(1.83e-21) == "1.83e-21"
    assert format_value(0.62271) == "0.6227"
    assert format_value(math.nan) == "—" and format_value(None) == "—"


def test_summary_table_orders_headline_first_and_fills_missing():
    table = summary_table([("model", _summary(0.01, 0.6)), ("target", {"model_utility": 0.62})])
    lines = table.splitlines()
    assert lines[0].startswith("| metric | model | target |")
    assert lines[2].startswith("| `forget_quality` | 0.0100 | — |")
    assert lines[3].startswith("| `model_utility` | 0.6000 | 0.6200 |")
    assert "privleak" in lines[-1]


def test_write_report_side_by_side_with_plots(tmp_path):
    rng = np.random.default_rng(0)
    files = write_report(
        tmp_path,
        _summary(0.2, 0.55),
        label="npo",
        target=_summary(1e-5, 0.6),
        retain=_summary(1.0, 0.58),
        forget_ratios=rng.lognormal(0, 1, 40),
        retain_forget_ratios=rng.lognormal(0.5, 1, 40),
        header="Model `x`",
    )
    assert set(files) == {"report", "truth_ratio_hist", "utility", "tradeoff"}
    for key in ("truth_ratio_hist", "utility", "tradeoff"):
        assert files[key].read_bytes()[:8] == PNG_MAGIC
    report = files["report"].read_text()
    assert "| metric | npo | target | retain | note |" in report
    assert "![forget truth ratios](truth_ratio_forget.png)" in report


def test_plot_tradeoff_skips_points_without_both_numbers(tmp_path):
    path = plot_tradeoff(
        [("a", _summary(0.1, 0.5)), ("b", {"model_utility": 0.4}), ("c", _summary(0.0, 0.3))], tmp_path / "t.png"
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
