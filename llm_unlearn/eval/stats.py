"""Pure aggregation: per-example values (numpy arrays) -> TOFU / MUSE summary numbers. No models, no files
except `load_tofu_eval_log`, which reads another framework's per-example log into the same arrays.

Definitions follow TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs",
https://arxiv.org/abs/2401.06121) and its reference code; membership inference follows MUSE
(Shi et al. 2024, https://arxiv.org/abs/2407.06460). All log-likelihood inputs are *mean token NLLs*
(`avg_nll` = -log P(a|q) / |a|), so the length-normalized probability is exp(-avg_nll).

Per-example layout (`per_example[set_name][key]`), the input of `summarize`:
    avg_nll [N]             mean token NLL of the answer
    paraphrased_avg_nll [N] mean token NLL of the paraphrased answer (NaN where there is none)
    perturbed_avg_nll [N,K] mean token NLL of each perturbed answer (a list of lists may be ragged)
    rougeL [N]              ROUGE-L recall of the greedy generation (optional)
    mia/loss, mia/zlib, mia/min_k, mia/min_k_pp [N]  membership scores, higher = "was trained on" (optional)
Set names decide the formulas: "forget" (truth-ratio score min(R, 1/R)), "real_authors" and "world_facts"
(probability normalized over the options), "holdout" (membership inference only); any other name is treated like
"retain".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import hmean, ks_2samp
from sklearn.metrics import roc_auc_score

from llm_unlearn.errors import DataError
from llm_unlearn.eval.mia import MIA_ATTACKS

FORGET = "forget"
HOLDOUT = "holdout"
OPTION_SETS = ("real_authors", "world_facts")
UTILITY_SETS = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("probability", "rougeL", "truth_ratio_score")

# TOFU's eval_log_aggregated.json part -> our set name.
TOFU_LOG_PARTS = {
    "eval_log.json": "retain",
    "eval_log_forget.json": "forget",
    "eval_real_author_wo_options.json": "real_authors",
    "eval_real_world_wo_options.json": "world_facts",
}


def _row_means(values: Any) -> np.ndarray:
    """Row means of an [N, K] array or a ragged list of lists; NaN for an empty row. Returns [N]."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return values.mean(axis=1) if values.shape[1] else np.full(len(values), np.nan)
    return np.array([np.mean(row) if len(row) else np.nan for row in values], dtype=np.float64)


def normalized_probability(avg_nll: Any) -> np.ndarray:
    """Length-normalized answer probability P(a|q)^(1/|a|) = exp(-avg_nll).

    Args:
        avg_nll: [N] mean token NLL of each answer.

    Returns:
        [N] probabilities in (0, 1]. TOFU reports their mean on the forget and retain sets.
    """
    return np.exp(-np.asarray(avg_nll, dtype=np.float64))


def option_probability(true_avg_nll: Any, perturbed_avg_nll: Any) -> np.ndarray:
    """TOFU probability on real_authors / world_facts: the true answer's normalized probability over all options.

    p_i = P(a_i|q_i)^(1/|a_i|) / (P(a_i|q_i)^(1/|a_i|) + sum_j P(a~_ij|q_i)^(1/|a~_ij|))

    Args:
        true_avg_nll: [N] mean token NLL of the true answer.
        perturbed_avg_nll: [N, K] mean token NLL of the K wrong options.

    Returns:
        [N] values in (0, 1].
    """
    true_p = normalized_probability(true_avg_nll)
    wrong = [np.exp(-np.asarray(row, dtype=np.float64)).sum() for row in perturbed_avg_nll]
    return true_p / (true_p + np.asarray(wrong, dtype=np.float64))


def truth_ratio(perturbed_avg_nll: Any, paraphrased_avg_nll: Any) -> np.ndarray:
    """TOFU truth ratio R per example.

    R_i = (prod_j P(a~_ij|q_i)^(1/|a~_ij|))^(1/K) / P(â_i|q_i)^(1/|â_i|)
        = exp(avg_nll(â_i) - mean_j avg_nll(a~_ij))

    i.e. the geometric mean of the perturbed answers' length-normalized probabilities over the paraphrased
    answer's (the answer's own where a set has no paraphrase). R < 1: the model prefers the true statement.

    Args:
        perturbed_avg_nll: [N, K] mean token NLLs of the perturbed answers (ragged lists allowed).
        paraphrased_avg_nll: [N] mean token NLL of the paraphrased (or original) answer.

    Returns:
        [N] ratios; NaN for an example without perturbed answers.
    """
    return np.exp(np.asarray(paraphrased_avg_nll, dtype=np.float64) - _row_means(perturbed_avg_nll))


def truth_ratio_score(ratios: Any, forget: bool) -> float:
    """TOFU truth-ratio summary: mean(min(R, 1/R)) on the forget set, mean(max(0, 1 - R)) on every other set.

    On the forget set 1.0 means the model cannot tell true from false (perfect forgetting looks like a model that
    never saw the data); elsewhere higher is better. NaN ratios (no perturbed answers) are left out.
    """
    r = np.asarray(ratios, dtype=np.float64)
    r = r[~np.isnan(r)]
    if r.size == 0:
        return float("nan")
    values = np.minimum(r, 1.0 / r) if forget else np.maximum(0.0, 1.0 - r)
    return float(values.mean())


def forget_quality(model_ratios: Any, retain_ratios: Any) -> tuple[float, float]:
    """TOFU forget quality: two-sample Kolmogorov-Smirnov test between forget-set truth ratios.

    Compares the per-example truth ratios of the evaluated model with those of the retain model (trained without
    the forget set) on the same forget split. The KS statistic is invariant under the monotone map R -> 1/R, so
    TOFU's code (which uses 1/R) gives the same numbers.

    Args:
        model_ratios: [N] truth ratios of the evaluated model on the forget set.
        retain_ratios: [M] truth ratios of the retain model on the same forget set.

    Returns:
        (p_value, ks_statistic) from `scipy.stats.ks_2samp`; a p-value near 1 means indistinguishable from the
        retain model (good forgetting); near 0 means clearly different.
    """
    a = np.asarray(model_ratios, dtype=np.float64)
    b = np.asarray(retain_ratios, dtype=np.float64)
    result = ks_2samp(a[~np.isnan(a)], b[~np.isnan(b)])
    return float(result.pvalue), float(result.statistic)


def model_utility(components: Mapping[str, float]) -> float:
    """TOFU model utility: harmonic mean (`scipy.stats.hmean`) of the nine utility components.

    The components are probability, ROUGE-L recall and truth-ratio score on retain, real_authors and world_facts
    (keys like "retain/probability"). A harmonic mean is dragged down by any single weak component. Components
    that are NaN (a set not evaluated) are left out; a zero component gives 0.
    """
    values = np.array([v for v in components.values() if v is not None and not np.isnan(v)], dtype=np.float64)
    if values.size == 0:
        return float("nan")
    if (values <= 0).any():
        return 0.0
    return float(hmean(values))


def mia_auc(member_scores: Any, nonmember_scores: Any) -> float:
    """ROC-AUC (`sklearn.metrics.roc_auc_score`) of telling forget-set examples (label 1) from holdout ones (0).

    Sign convention: every membership score is "higher = more likely trained on", so AUC = P(score(forget) >
    score(holdout)). 0.5: indistinguishable (what a retain model gives); above 0.5: the forget set still looks
    trained on; below 0.5: the forget set looks *less* familiar than unseen data (over-unlearning).
    """
    a = np.asarray(member_scores, dtype=np.float64)
    b = np.asarray(nonmember_scores, dtype=np.float64)
    labels = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    return float(roc_auc_score(labels, np.concatenate([a, b])))


def privleak(model_auc: float, retain_auc: float) -> float:
    """MUSE PrivLeak = (AUC_model - AUC_retain) / AUC_retain x 100.

    Near 0 is ideal; positive values mean the forget set still leaks membership (under-unlearning), negative
    values mean over-unlearning. Uses the AUC convention of `mia_auc`.
    """
    return float((model_auc - retain_auc) / retain_auc * 100.0)


def set_metrics(name: str, values: Mapping[str, Any]) -> dict[str, float]:
    """Summary numbers of one set from its per-example arrays (see the module docstring for keys and formulas)."""
    out: dict[str, float] = {}
    if "avg_nll" not in values or name == HOLDOUT:
        return out
    avg_nll = np.asarray(values["avg_nll"], dtype=np.float64)
    perturbed = values.get("perturbed_avg_nll")
    all_options = perturbed is not None and len(perturbed) > 0 and all(len(row) for row in perturbed)
    any_options = perturbed is not None and any(len(row) for row in perturbed)
    if name in OPTION_SETS and all_options:
        out["probability"] = float(option_probability(avg_nll, perturbed).mean())
    else:
        out["probability"] = float(normalized_probability(avg_nll).mean())
    if "rougeL" in values and values["rougeL"] is not None and len(values["rougeL"]):
        out["rougeL"] = float(np.nanmean(np.asarray(values["rougeL"], dtype=np.float64)))
    if any_options:
        ratios = example_truth_ratios(values)
        out["truth_ratio_score"] = truth_ratio_score(ratios, forget=name == FORGET)
    return out


def example_truth_ratios(values: Mapping[str, Any]) -> np.ndarray:
    """[N] truth ratios of one set: paraphrased answer where present, the answer itself otherwise."""
    avg_nll = np.asarray(values["avg_nll"], dtype=np.float64)
    para = values.get("paraphrased_avg_nll")
    para = avg_nll if para is None else np.asarray(para, dtype=np.float64)
    para = np.where(np.isnan(para), avg_nll, para)
    return truth_ratio(values["perturbed_avg_nll"], para)


def _mia_aucs(per_example: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    forget, holdout = per_example.get(FORGET, {}), per_example.get(HOLDOUT, {})
    out = {}
    for attack in MIA_ATTACKS:
        key = f"mia/{attack}"
        if key in forget and key in holdout and len(forget[key]) and len(holdout[key]):
            out[attack] = mia_auc(forget[key], holdout[key])
    return out


def summarize(
    per_example: Mapping[str, Mapping[str, Any]], retain: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, float]:
    """Turn per-example values into the summary numbers.

    Args:
        per_example: {set name: {key: [N] array}} for the evaluated model (layout in the module docstring).
        retain: the same structure for the retain model, when known; gives forget quality (from its forget-set
            truth ratios) and privleak (from its forget/holdout membership scores).

    Returns:
        Flat dict: "<set>/probability", "<set>/rougeL", "<set>/truth_ratio_score" per set; "model_utility"
        (harmonic mean of the nine components, when all three utility sets are present); "forget_quality" and
        "forget_quality_ks" (with `retain`); "mia/<attack>_auc" (with forget + holdout scores) and
        "privleak/<attack>" (with the retain model's scores too).
    """
    summary: dict[str, float] = {}
    for name, values in per_example.items():
        for metric, value in set_metrics(name, values).items():
            summary[f"{name}/{metric}"] = value
    components = {f"{s}/{m}": summary.get(f"{s}/{m}", float("nan")) for s in UTILITY_SETS for m in UTILITY_METRICS}
    if all(not np.isnan(v) for v in components.values()):
        summary["model_utility"] = model_utility(components)
    if retain is not None and FORGET in per_example and FORGET in retain:
        p_value, ks = forget_quality(example_truth_ratios(per_example[FORGET]), example_truth_ratios(retain[FORGET]))
        summary["forget_quality"] = p_value
        summary["forget_quality_ks"] = ks
    aucs = _mia_aucs(per_example)
    retain_aucs = _mia_aucs(retain) if retain is not None else {}
    for attack, auc in aucs.items():
        summary[f"mia/{attack}_auc"] = auc
        if attack in retain_aucs:
            summary[f"privleak/{attack}"] = privleak(auc, retain_aucs[attack])
    return summary


def utility_components(summary: Mapping[str, float]) -> dict[str, float]:
    """The nine model-utility components of a summary, in a fixed order (NaN where missing)."""
    return {f"{s}/{m}": float(summary.get(f"{s}/{m}", float("nan"))) for s in UTILITY_SETS for m in UTILITY_METRICS}


def load_tofu_eval_log(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read TOFU's `eval_log_aggregated.json` into our per-example layout, ready for `summarize`.

    Maps eval_log.json -> retain, eval_log_forget.json -> forget, eval_real_author_wo_options.json ->
    real_authors, eval_real_world_wo_options.json -> world_facts; keys avg_gt_loss -> avg_nll,
    avg_paraphrased_loss -> paraphrased_avg_nll, average_perturb_loss -> perturbed_avg_nll,
    rougeL_recall -> rougeL, num_token_gt -> num_tokens. Examples are ordered by their integer index.

    Raises:
        DataError: naming the file and the missing part or key.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read a TOFU eval log ({exc})") from None
    keys = {
        "avg_gt_loss": "avg_nll",
        "avg_paraphrased_loss": "paraphrased_avg_nll",
        "average_perturb_loss": "perturbed_avg_nll",
        "rougeL_recall": "rougeL",
        "num_token_gt": "num_tokens",
    }
    out: dict[str, dict[str, np.ndarray]] = {}
    for part, name in TOFU_LOG_PARTS.items():
        if part not in data:
            continue
        values = {}
        for src, dst in keys.items():
            if src not in data[part]:
                if src == "rougeL_recall":
                    continue
                raise DataError(f"{path}: part '{part}' has no key '{src}'")
            column = data[part][src]
            order = sorted(column, key=int)
            values[dst] = _to_array([column[i] for i in order])
        out[name] = values
    if not out:
        raise DataError(f"{path}: none of the TOFU log parts {sorted(TOFU_LOG_PARTS)} found")
    return out


def _to_array(values: Sequence[Any]) -> Any:
    """A float array; a ragged list of lists stays a list of arrays."""
    try:
        return np.asarray(values, dtype=np.float64)
    except ValueError:
        return [np.asarray(v, dtype=np.float64) for v in values]
