"""Unlearning losses as pure tensor functions: log-probs, NLL, GA, NPO, SimNPO, DPO, KL. No model calls here.

Conventions:
- `logits` are `[B, T, V]` next-token logits of a causal LM for `input_ids` `[B, T]`; `labels` are `[B, T]`,
  `-100` (`IGNORE_INDEX`) on prompt and padding tokens, the token id on answer tokens. Position `t` of the logits
  predicts label `t + 1` (the shift happens here, as in `transformers`' causal LM loss).
- Token-level quantities are computed in float32 whatever the logits dtype.
- Every loss returns a scalar: a mean over sequences (NPO, SimNPO, DPO) or over answer tokens (NLL, GA, KL) of the
  batch it is given. The trainer rescales these means for gradient accumulation and several processes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "answer_kl",
    "dpo_loss",
    "gradient_ascent_loss",
    "nll_from_log_probs",
    "npo_loss",
    "sequence_log_probs",
    "simnpo_loss",
    "token_log_probs",
    "token_nll",
]


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each label token, with the causal shift and the `-100` mask applied.

    Args:
        logits: `[B, T, V]` next-token logits.
        labels: `[B, T]` token ids, `-100` where no loss is taken (prompt, padding).

    Returns:
        `(logp, mask)`: `logp` `[B, T-1]` float32, `log p(labels[:, t+1] | prefix)`, exactly 0 where masked;
        `mask` `[B, T-1]` bool, True on answer tokens.
    """
    # Shift the labels, not the logits: the logits stay one contiguous [B*T, V] view (no copy), as in
    # transformers' ForCausalLMLoss; the last position gets label -100 and is dropped below.
    shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]  # [B, T]
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)  # [B, T], 0 where ignored
    return -nll[:, :-1], shift_labels[:, :-1] != IGNORE_INDEX


def sequence_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each sequence's answer, `log pi(y|x)`, and its number of answer tokens `|y|`.

    Padding-safe: padding and prompt carry `-100` labels and contribute exactly nothing, so the result of a
    sequence does not depend on how much padding the batch adds.

    Args:
        logits: `[B, T, V]` next-token logits.
        labels: `[B, T]` with `-100` on prompt and padding.

    Returns:
        `(logp, num_tokens)`: both `[B]`; `logp` float32 summed over answer tokens, `num_tokens` float32 counts.
        Divide one by the other for the length-normalized log-prob.
    """
    logp, mask = token_log_probs(logits, labels)
    return logp.sum(dim=-1), mask.sum(dim=-1).float()


def nll_from_log_probs(logp: torch.Tensor, num_tokens: torch.Tensor) -> torch.Tensor:
    """Mean NLL per answer token of a batch from `sequence_log_probs` output: `-sum(logp) / sum(num_tokens)`.

    Args:
        logp: `[B]` summed answer log-probs.
        num_tokens: `[B]` answer token counts.

    Returns:
        scalar; equals `token_nll` on the same batch (a batch without answer tokens gives 0, not NaN).
    """
    return -logp.sum() / num_tokens.sum().clamp(min=1)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per answer token, averaged over all answer tokens of the batch (prompt masked).

    The usual causal-LM loss (`transformers`' `ForCausalLMLoss` with `-100` masking).

    Args:
        logits: `[B, T, V]`.
        labels: `[B, T]` with `-100` on prompt and padding.

    Returns:
        scalar `sum(-log p(y_t)) / #answer tokens`.
    """
    return nll_from_log_probs(*sequence_log_probs(logits, labels))


def gradient_ascent_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient ascent on the forget set: `-NLL(forget)`. Unbounded below; guard it (see the trainer).

    Used as the forget term of GA / GradDiff in TOFU (Maini et al. 2024, https://arxiv.org/abs/2401.06121).

    Args:
        logits: `[B, T, V]`.
        labels: `[B, T]` with `-100` on prompt and padding.

    Returns:
        scalar `-token_nll(logits, labels)`.
    """
    return -token_nll(logits, labels)


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Negative Preference Optimization (Zhang et al. 2024, https://arxiv.org/abs/2404.05868).

    `L = -(2/beta) * mean_i log sigmoid(-beta * (log pi_theta(y_i|x_i) - log pi_ref(y_i|x_i)))`.
    Bounded: as the log-ratio goes to -inf the loss goes to 0 (unlike gradient ascent), and its gradient
    vanishes with it.

    Args:
        logp: `[B]` summed answer log-probs under the trained model.
        ref_logp: `[B]` the same under the reference model (no gradient needed).
        beta: inverse temperature.

    Returns:
        scalar.
    """
    log_ratio = logp - ref_logp  # [B]
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def simnpo_loss(logp: torch.Tensor, num_tokens: torch.Tensor, beta: float = 2.5, gamma: float = 0.0) -> torch.Tensor:
    """SimNPO: reference-free NPO on length-normalized log-probs (Fan et al. 2024, https://arxiv.org/abs/2410.07163).

    `L = -(2/beta) * mean_i log sigmoid(-beta * log pi_theta(y_i|x_i) / |y_i| - gamma)`.

    Args:
        logp: `[B]` summed answer log-probs.
        num_tokens: `[B]` answer lengths `|y|` (clamped to >= 1).
        beta: inverse temperature.
        gamma: reward margin.

    Returns:
        scalar.
    """
    normalized = logp / num_tokens.clamp(min=1)  # [B]
    return -(2.0 / beta) * F.logsigmoid(-beta * normalized - gamma).mean()


def dpo_loss(
    chosen_logp: torch.Tensor,
    chosen_ref_logp: torch.Tensor,
    rejected_logp: torch.Tensor,
    rejected_ref_logp: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290), scaled by 2/beta as in NPO.

    `L = -(2/beta) * mean_i log sigmoid(beta * [r(chosen_i) - r(rejected_i)])` with the log-ratio
    `r(y) = log pi_theta(y|x) - log pi_ref(y|x)`.
    For IdkDPO (TOFU, https://arxiv.org/abs/2401.06121) the chosen answer is a refusal and the rejected one the true
    forget answer.

    Args:
        chosen_logp, chosen_ref_logp, rejected_logp, rejected_ref_logp: `[B]` summed answer log-probs.
        beta: inverse temperature.

    Returns:
        scalar.
    """
    margin = (chosen_logp - chosen_ref_logp) - (rejected_logp - rejected_ref_logp)  # [B]
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def answer_kl(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`KL(pi_ref || pi_theta)` of the next-token distributions, averaged over answer tokens only.

    `KL_t = sum_v p_ref(v) (log p_ref(v) - log p_theta(v))` at each position that predicts an answer token
    (`labels[:, t+1] != -100`); prompt and padding positions are masked. (The TOFU / open-unlearning KL
    retain term averages over every position, padding included; we do not.)

    Args:
        logits: `[B, T, V]` of the trained model.
        ref_logits: `[B, T, V]` of the reference model (computed under no_grad).
        labels: `[B, T]` with `-100` on prompt and padding.

    Returns:
        scalar, 0 when `logits == ref_logits` (and for a batch without answer tokens).
    """
    mask = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:] != IGNORE_INDEX  # [B, T]: position t predicts t+1
    logq = F.log_softmax(logits[mask].float(), dim=-1)  # [N, V] trained model, answer positions only
    logp = F.log_softmax(ref_logits[mask].float(), dim=-1)  # [N, V] reference
    kl = F.kl_div(logq, logp, log_target=True, reduction="sum")  # sum_t sum_v p (log p - log q)
    return kl / mask.sum().clamp(min=1)
