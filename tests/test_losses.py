"""Hand-computed values for every loss in llm_unlearn.losses, with prompt masking and padding."""

from __future__ import annotations

import math

import pytest
import torch

from llm_unlearn.losses import (
    answer_kl,
    dpo_loss,
    gradient_ascent_loss,
    nll_from_log_probs,
    npo_loss,
    sequence_log_probs,
    simnpo_loss,
    token_log_probs,
    token_nll,
)

M = -100  # masked label


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def probs_to_logits(rows: list[list[list[float]]]) -> torch.Tensor:
    """Logits whose softmax is exactly the given probabilities (log of them)."""
    return torch.tensor(rows, dtype=torch.float64).log().float()


@pytest.fixture
def batch():
    """B=2, T=4, V=3. Position t predicts label t+1.

    Row 0: prompt 1 token, answer tokens [1, 2], then one padding position.
    Row 1: prompt 2 tokens, answer tokens [0, 1] (no padding).
    """
    p = [
        [[0.25, 0.5, 0.25], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05]],
        [[0.2, 0.2, 0.6], [0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]],
    ]
    labels = torch.tensor([[M, 1, 2, M], [M, M, 0, 1]])
    # row 0: label 1 predicted at t=0 (p=0.5), label 2 at t=1 (p=0.7)
    # row 1: label 0 predicted at t=1 (p=0.5), label 1 at t=2 (p=0.8)
    expected_logp = [math.log(0.5) + math.log(0.7), math.log(0.5) + math.log(0.8)]
    return probs_to_logits(p), labels, expected_logp


def test_sequence_log_probs_hand_values(batch):
    logits, labels, expected = batch
    logp, n = sequence_log_probs(logits, labels)
    assert logp.tolist() == pytest.approx(expected, abs=1e-6)
    assert n.tolist() == [2.0, 2.0]


def test_sequence_log_probs_ignores_padding_content_and_width(batch):
    logits, labels, expected = batch
    # extra padding columns with huge, arbitrary logits and -100 labels change nothing
    pad_logits = torch.randn(2, 3, 3) * 1e3
    wide_logits = torch.cat([logits, pad_logits], dim=1)
    wide_labels = torch.cat([labels, torch.full((2, 3), M)], dim=1)
    logp, n = sequence_log_probs(wide_logits, wide_labels)
    assert logp.tolist() == pytest.approx(expected, abs=1e-6)
    assert n.tolist() == [2.0, 2.0]
    # the logits at masked (prompt) positions do not matter either
    changed = logits.clone()
    changed[1, 0] = torch.tensor([50.0, -50.0, 0.0])
    assert sequence_log_probs(changed, labels)[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_token_log_probs_zero_where_masked(batch):
    logits, labels, _ = batch
    logp, mask = token_log_probs(logits, labels)
    assert mask.tolist() == [[True, True, False], [False, True, True]]
    assert logp[~mask].abs().max().item() == 0.0


def test_token_nll_and_gradient_ascent(batch):
    logits, labels, _ = batch
    expected = -(math.log(0.5) + math.log(0.7) + math.log(0.5) + math.log(0.8)) / 4
    assert token_nll(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    assert gradient_ascent_loss(logits, labels).item() == pytest.approx(-expected, abs=1e-6)
    assert nll_from_log_probs(*sequence_log_probs(logits, labels)).item() == pytest.approx(expected, abs=1e-6)


def test_token_nll_is_a_token_mean_not_a_sequence_mean():
    # row 0 has 1 answer token with p=0.5, row 1 has 3 answer tokens with p=1 (logit gap huge)
    logits = torch.zeros(2, 4, 2)
    logits[1, :, 0] = 100.0
    labels = torch.tensor([[M, M, M, 1], [M, 0, 0, 0]])
    assert token_nll(logits, labels).item() == pytest.approx(math.log(2) / 4, abs=1e-6)


def test_token_nll_empty_answer_is_zero_not_nan():
    logits = torch.randn(1, 3, 5)
    labels = torch.full((1, 3), M)
    assert token_nll(logits, labels).item() == 0.0


def test_bfloat16_logits_computed_in_float32(batch):
    logits, labels, expected = batch
    logp, _ = sequence_log_probs(logits.bfloat16(), labels)
    assert logp.dtype == torch.float32
    assert logp.tolist() == pytest.approx(expected, abs=2e-2)


def test_npo_hand_value():
    logp = torch.tensor([-2.0, -4.0])
    ref = torch.tensor([-3.0, -3.0])  # log-ratios +1, -1
    beta = 0.5
    expected = -(2 / beta) * (logsig(-0.5) + logsig(0.5)) / 2
    assert npo_loss(logp, ref, beta).item() == pytest.approx(expected, abs=1e-6)
    # at log-ratio 0 NPO is (2/beta) log 2
    assert npo_loss(ref, ref, 0.1).item() == pytest.approx(20 * math.log(2), abs=1e-5)


def test_npo_bounded_while_gradient_ascent_is_not():
    """Push the forget answer's probability to 0: GA's loss runs to -inf, NPO's to 0 with a vanishing gradient."""
    labels = torch.tensor([[M, 1, 1]])
    ga_losses, npo_losses, npo_grads = [], [], []
    for scale in (1.0, 10.0, 100.0, 1000.0):
        logits = torch.zeros(1, 3, 2)
        logits[..., 0] = scale  # label 1 gets probability ~ exp(-scale)
        logits.requires_grad_(True)
        ga_losses.append(gradient_ascent_loss(logits, labels).item())
        logp, _ = sequence_log_probs(logits, labels)
        loss = npo_loss(logp, torch.zeros(1), beta=0.1)
        (grad,) = torch.autograd.grad(loss, logits)
        npo_losses.append(loss.item())
        npo_grads.append(grad.abs().max().item())
    assert ga_losses[-1] < -999  # -NLL ~ -scale: unbounded
    assert all(a > b for a, b in zip(ga_losses, ga_losses[1:], strict=False))
    assert all(0 <= v <= 20 * math.log(2) for v in npo_losses)
    assert npo_losses[-1] < 1e-6 and npo_grads[-1] < 1e-6
    assert all(math.isfinite(v) for v in npo_losses + npo_grads)


def test_simnpo_hand_value_and_length_normalization():
    logp = torch.tensor([-6.0, -2.0])
    n = torch.tensor([3.0, 1.0])  # normalized log-probs: -2, -2
    beta, gamma = 2.5, 0.5
    expected = -(2 / beta) * logsig(-beta * -2.0 - gamma)
    assert simnpo_loss(logp, n, beta, gamma).item() == pytest.approx(expected, abs=1e-6)
    # defaults beta=2.5, gamma=0
    assert simnpo_loss(logp, n).item() == pytest.approx(-(2 / 2.5) * logsig(5.0), abs=1e-6)


def test_dpo_hand_value():
    chosen, chosen_ref = torch.tensor([-5.0]), torch.tensor([-6.0])  # +1
    rejected, rejected_ref = torch.tensor([-4.0]), torch.tensor([-3.0])  # -1
    beta = 0.1
    expected = -(2 / beta) * logsig(beta * 2.0)
    assert dpo_loss(chosen, chosen_ref, rejected, rejected_ref, beta).item() == pytest.approx(expected, abs=1e-5)


def test_answer_kl_zero_when_equal(batch):
    logits, labels, _ = batch
    assert answer_kl(logits, logits.clone(), labels).item() == pytest.approx(0.0, abs=1e-7)


def test_answer_kl_hand_value_masks_prompt_and_padding():
    # one answer position (t=1 predicts label at t=2); other positions differ wildly but are masked
    ref = probs_to_logits([[[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]]])
    new = probs_to_logits([[[0.01, 0.99], [0.25, 0.75], [0.1, 0.9]]])
    labels = torch.tensor([[M, M, 1]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert answer_kl(new, ref, labels).item() == pytest.approx(expected, abs=1e-6)
    # KL(ref || new) is not symmetric: swapping gives a different value
    assert answer_kl(ref, new, labels).item() != pytest.approx(expected, abs=1e-3)
