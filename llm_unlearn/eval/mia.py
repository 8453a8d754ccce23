"""Membership-inference scores of one answer from its per-token statistics (no model calls, no aggregation).

Sign convention: every score is "higher = more likely a training member", so the ROC-AUC of forget (label 1)
vs holdout (label 0) computed in `stats.mia_auc` is above 0.5 when the forget set still looks trained on.

- LOSS (Yeom et al. 2018, https://arxiv.org/abs/1709.01604): -mean token NLL of the answer.
- ZLib (Carlini et al. 2021, https://arxiv.org/abs/2012.07805): -(mean token NLL) / zlib-compressed length of
  the answer in bytes (texts that are easy to compress are expected to have low loss anyway).
- Min-K% (Shi et al. 2024, https://arxiv.org/abs/2310.16789): mean log-prob of the k% least likely tokens.
- Min-K%++ (Zhang et al. 2024, https://arxiv.org/abs/2404.02936): the same over the token scores
  (log p(x_t) - mu_t) / sigma_t, with mu_t, sigma_t the mean and std of log p(z) for z ~ p(.|x_<t).
k = 0.4 by default (MUSE's setting); at least one token is kept.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import numpy as np

MIA_ATTACKS = ("loss", "zlib", "min_k", "min_k_pp")


def zlib_length(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text."""
    return len(zlib.compress(text.encode("utf-8")))


def min_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the max(1, int(k * n)) lowest entries of `values` [n] (NaN when empty)."""
    if values.size == 0:
        return float("nan")
    count = max(1, int(len(values) * k))
    return float(np.sort(values)[:count].mean())


def mia_scores(token_stats: Mapping[str, np.ndarray], text: str, k: float = 0.4) -> dict[str, float]:
    """LOSS, ZLib, Min-K% and Min-K%++ membership scores of one answer.

    Args:
        token_stats: [n] arrays over the answer tokens: `log_prob`, `mu`, `sigma` (see `probes.token_statistics`).
        text: the answer text (for the zlib length).
        k: fraction of tokens kept by Min-K% / Min-K%++.

    Returns:
        {"loss", "zlib", "min_k", "min_k_pp"}: higher = more likely a member.
    """
    log_prob = np.asarray(token_stats["log_prob"], dtype=np.float64)
    if log_prob.size == 0:
        return dict.fromkeys(MIA_ATTACKS, math.nan)
    avg_nll = -log_prob.mean()
    normalized = (log_prob - token_stats["mu"]) / token_stats["sigma"]
    return {
        "loss": float(-avg_nll),
        "zlib": float(-avg_nll / zlib_length(text)),
        "min_k": min_k_mean(log_prob, k),
        "min_k_pp": min_k_mean(np.asarray(normalized, dtype=np.float64), k),
    }
