"""Tests of the pure aggregation in llm_unlearn.eval.stats: hand-computed values and TOFU's published logs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_unlearn.errors import DataError
from llm_unlearn.eval import stats

from conftest import TOFU_LOGS_DIR

FULL_LOG = TOFU_LOGS_DIR / "llama2-7b_full.json"
RETAIN_LOG = TOFU_LOGS_DIR / "llama2-7b_retain90.json"
needs_logs = pytest.mark.skipif(not FULL_LOG.is_file(), reason="TOFU eval logs not available")


def test_normalized_probability_and_truth_ratio_by_hand():
    np.testing.assert_allclose(stats.normalized_probability([0.0, np.log(2.0)]), [1.0, 0.5])
    # perturbed probs 0.25 and 0.04 -> geometric mean 0.1; paraphrase prob 0.5 -> R = 0.2
    pert = -np.log([[0.25, 0.04]])
    r = stats.truth_ratio(pert, -np.log([0.5]))
    np.testing.assert_allclose(r, [0.2])
    assert stats.truth_ratio_score([0.2, 5.0], forget=True) == pytest.approx(0.2)
    assert stats.truth_ratio_score([0.2, 5.0], forget=False) == pytest.approx((0.8 + 0.0) / 2)
    # ragged perturbed lists and a row without perturbed answers (NaN, left out of the score)
    ragged = stats.truth_ratio([[1.0, 3.0], [2.0], []], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(ragged[:2], [np.exp(1.0 - 2.0), np.exp(1.0 - 2.0)])
    assert np.isnan(ragged[2])


def test_option_probability_by_hand():
    # true answer prob 0.5, wrong options 0.25 + 0.25 -> 0.5 / 1.0
    p = stats.option_probability(-np.log([0.5]), -np.log([[0.25, 0.25]]))
    np.testing.assert_allclose(p, [0.5])


def test_model_utility_is_harmonic_mean():
    comps = {"a": 0.5, "b": 1.0, "c": 0.25}
    assert stats.model_utility(comps) == pytest.approx(3 / (2 + 1 + 4))
    assert stats.model_utility({"a": 0.5, "b": 0.0}) == 0.0
    assert stats.model_utility({"a": 0.5, "b": float("nan")}) == pytest.approx(0.5)


def test_forget_quality_same_and_different_distributions():
    rng = np.random.default_rng(0)
    ratios = rng.lognormal(0.0, 0.5, size=200)
    p_same, ks_same = stats.forget_quality(ratios, ratios)
    assert p_same == pytest.approx(1.0) and ks_same == 0.0
    p_diff, ks_diff = stats.forget_quality(ratios, rng.lognormal(3.0, 0.5, size=200))
    assert p_diff < 1e-30 and ks_diff > 0.9


def test_mia_auc_and_privleak_sign_convention():
    assert stats.mia_auc([3.0, 4.0], [1.0, 2.0]) == 1.0  # members score higher -> AUC 1
    assert stats.mia_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert stats.privleak(0.75, 0.5) == pytest.approx(50.0)
    assert stats.privleak(0.25, 0.5) == pytest.approx(-50.0)


def _toy_set(avg_nll, para, pert, rouge=None):
    values = {"avg_nll": np.array(avg_nll), "paraphrased_avg_nll": np.array(para), "perturbed_avg_nll": np.array(pert)}
    if rouge is not None:
        values["rougeL"] = np.array(rouge)
    return values


def test_summarize_on_known_inputs():
    ln2 = np.log(2.0)
    per_example = {
        "forget": _toy_set([0.0, ln2], [ln2, ln2], [[2 * ln2, 2 * ln2], [0.0, 0.0]], [1.0, 0.5]),
        "retain": _toy_set([ln2, ln2], [ln2, ln2], [[2 * ln2], [2 * ln2]], [1.0, 1.0]),
        "real_authors": _toy_set([ln2], [np.nan], [[ln2, ln2]], [0.5]),
        "world_facts": _toy_set([ln2], [np.nan], [[2 * ln2, 2 * ln2]], [1.0]),
    }
    s = stats.summarize(per_example)
    assert s["forget/probability"] == pytest.approx((1.0 + 0.5) / 2)
    assert s["forget/rougeL"] == pytest.approx(0.75)
    # forget R = [0.25/0.5, 1/0.5] = [0.5, 2] -> min(R, 1/R) = 0.5 each
    assert s["forget/truth_ratio_score"] == pytest.approx(0.5)
    assert s["retain/truth_ratio_score"] == pytest.approx(0.5)  # R = 0.5 -> 1 - R
    assert s["real_authors/probability"] == pytest.approx(0.5 / 1.5)
    assert s["real_authors/truth_ratio_score"] == 0.0  # no paraphrase: R = 0.5 / 0.5 = 1
    assert s["world_facts/probability"] == pytest.approx(0.5 / 1.0)
    assert s["world_facts/truth_ratio_score"] == pytest.approx(0.5)
    comps = [0.5, 1.0, 0.5, 1 / 3, 0.5, 0.0, 0.5, 1.0, 0.5]
    assert s["model_utility"] == 0.0 and min(comps) == 0.0
    assert "forget_quality" not in s
    s2 = stats.summarize(per_example, retain=per_example)
    assert s2["forget_quality"] == pytest.approx(1.0)


@needs_logs
def test_reaggregating_tofu_logs_reproduces_the_published_table():
    full = stats.load_tofu_eval_log(FULL_LOG)
    retain = stats.load_tofu_eval_log(RETAIN_LOG)
    s = stats.summarize(full, retain=retain)
    r = stats.summarize(retain, retain=retain)
    expected = {
        "retain/probability": (0.9895, 0.9889),
        "retain/rougeL": (0.9857, 0.9758),
        "retain/truth_ratio_score": (0.4747, 0.4710),
        "real_authors/probability": (0.4555, 0.4341),
        "real_authors/rougeL": (0.9330, 0.9230),
        "real_authors/truth_ratio_score": (0.5962, 0.5707),
        "world_facts/probability": (0.4186, 0.4143),
        "world_facts/rougeL": (0.8825, 0.8974),
        "world_facts/truth_ratio_score": (0.5390, 0.5442),
        "model_utility": (0.6227, 0.6137),
        "forget/truth_ratio_score": (0.516, 0.674),
    }
    for key, (want_full, want_retain) in expected.items():
        assert s[key] == pytest.approx(want_full, abs=6e-4), key
        assert r[key] == pytest.approx(want_retain, abs=6e-4), key
    assert s["forget_quality"] == pytest.approx(1.83e-21, rel=0.01)
    assert s["forget_quality_ks"] == pytest.approx(0.397, abs=1e-3)
    assert r["forget_quality"] == pytest.approx(1.0)


@needs_logs
def test_arithmetic_mean_variant_does_not_match():
    """The geometric mean over perturbed answers is the definition; the arithmetic mean gives 0.5859."""
    full = stats.load_tofu_eval_log(FULL_LOG)
    summary = stats.summarize(full)
    comps = stats.utility_components(summary)
    for name in stats.UTILITY_SETS:
        v = full[name]
        para = np.where(np.isnan(v["paraphrased_avg_nll"]), v["avg_nll"], v["paraphrased_avg_nll"])
        arithmetic_ratio = np.exp(-v["perturbed_avg_nll"]).mean(axis=1) / np.exp(-para)
        comps[f"{name}/truth_ratio_score"] = stats.truth_ratio_score(arithmetic_ratio, forget=False)
    assert stats.model_utility(comps) == pytest.approx(0.5859, abs=6e-4)
    assert summary["model_utility"] != pytest.approx(0.5859, abs=0.01)


def test_load_tofu_eval_log_errors(tmp_path):
    bad = tmp_path / "log.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="log.json"):
        stats.load_tofu_eval_log(bad)
    bad.write_text(json.dumps({"eval_log.json": {"avg_gt_loss": {"0": 1.0}}}))
    with pytest.raises(DataError, match="avg_paraphrased_loss"):
        stats.load_tofu_eval_log(bad)
    bad.write_text(json.dumps({"other": {}}))
    with pytest.raises(DataError, match="none of the TOFU log parts"):
        stats.load_tofu_eval_log(bad)
