"""Forward-pass probes: answer / paraphrase / perturbed-answer log-likelihoods and per-token statistics.

One forward per batch of candidate sequences: every row contributes its answer, its paraphrased answer and its
perturbed answers, all encoded with the training `PromptFormatter`; candidates of several rows are packed into
one padded batch (sorted by length to waste little padding), and the LM head runs only on the positions that
predict answer tokens (`logits_to_keep`). Each forward serves every metric that needs it:
the answer's NLL gives the probability, the truth ratio's denominator where there is no paraphrase, and the
membership-inference scores (LOSS, ZLib, Min-K%, Min-K%++ from the per-token statistics of the same logits).
No generation here (see generation.py) and no aggregation (see stats.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from llm_unlearn.data.collate import IGNORE_INDEX, PromptFormatter, pad_examples
from llm_unlearn.errors import DataError
from llm_unlearn.eval.mia import mia_scores
from llm_unlearn.losses import sequence_log_probs

ANSWER, PARAPHRASE, PERTURBED = "answer", "paraphrase", "perturbed"


@contextmanager
def eval_mode(model: Any):
    """Put `model` in eval mode for the block and restore its previous mode (the callback runs mid-training)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (inputs go there; device_map models dispatch themselves)."""
    return next(model.parameters()).device


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore padding: 0 at the first real token whatever the padding side. [B, T] -> [B, T]."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def build_candidates(
    rows: Sequence[dict[str, Any]], formatter: PromptFormatter, source: str = ""
) -> tuple[list[dict[str, list[int]]], list[tuple[int, str, int]]]:
    """Encode every candidate answer of every row.

    Raises:
        DataError: naming the row's source when question/answer/perturbed_answer have the wrong type.

    Returns:
        (examples, keys): encoded examples (input_ids / attention_mask / labels) and, for each, (row index,
        kind, position) with kind in "answer", "paraphrase", "perturbed" (position = index among the perturbed
        answers, else 0).
    """
    examples, keys = [], []
    for i, row in enumerate(rows):
        where = row.get("source") or f"{source or 'rows'} record {i}"
        for key in ("question", "answer"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{where}: field '{key}' must be a string for evaluation, got {row.get(key)!r}")
        perturbed = row.get("perturbed_answer")
        if perturbed is not None and (
            not isinstance(perturbed, list) or not all(isinstance(p, str) for p in perturbed)
        ):
            raise DataError(f"{where}: field 'perturbed_answer' must be a list of strings, got {perturbed!r}")
        candidates = [(ANSWER, 0, row["answer"])]
        if row.get("paraphrased_answer"):
            candidates.append((PARAPHRASE, 0, row["paraphrased_answer"]))
        candidates += [(PERTURBED, j, text) for j, text in enumerate(row.get("perturbed_answer") or [])]
        for kind, j, text in candidates:
            examples.append(formatter.encode(row["question"], text, where))
            keys.append((i, kind, j))
    return examples, keys


def token_statistics(logits: torch.Tensor, labels: torch.Tensor) -> list[dict[str, np.ndarray]]:
    """Per-token statistics of the answer tokens, for membership inference.

    Args:
        logits: [B, T, V] model outputs.
        labels: [B, T] token ids, -100 on prompt and padding (shifted inside: logits at t predict labels at t+1).

    Returns:
        One dict per row with [n] arrays over the n answer tokens: `log_prob` (log p(x_t | x_<t)), `mu`
        (E_{z~p}[log p(z)]) and `sigma` (std of log p(z) under p), the moments Min-K%++ normalizes with.
    """
    out = []
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    for b in range(logits.shape[0]):
        mask = shift_labels[b] != IGNORE_INDEX  # [T-1]
        log_p = torch.log_softmax(shift_logits[b][mask].float(), dim=-1)  # [n, V]
        token = log_p.gather(-1, shift_labels[b][mask].unsqueeze(-1)).squeeze(-1)  # [n]
        p = log_p.exp()
        mu = (p * log_p).sum(-1)  # [n]
        var = (p * (log_p - mu.unsqueeze(-1)).square()).sum(-1)  # two-pass: no cancellation when sigma is small
        out.append(
            {
                "log_prob": token.double().cpu().numpy(),
                "mu": mu.double().cpu().numpy(),
                "sigma": var.clamp(min=1e-12).sqrt().double().cpu().numpy(),
            }
        )
    return out


def answer_logits(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward a padded batch, keeping only the logits from the earliest answer-predicting position on.

    The prompt's own next-token logits are never used, so the LM head and the log-softmax run on the last K
    positions only (`logits_to_keep`, ~half the sequence for TOFU). Models whose forward lacks `logits_to_keep`
    get the full logits.

    Args:
        model: causal LM.
        batch: `input_ids`, `attention_mask`, `labels` [b, T] (labels -100 on prompt and padding).

    Returns:
        (logits [b, K, V] float32, labels [b, K]) aligned as in a causal LM: logits at k predict labels at k + 1.
    """
    labels = batch["labels"]
    width = labels.shape[1]
    first_label = int((labels != IGNORE_INDEX).int().argmax(dim=1).min())  # earliest answer token of the batch
    keep = min(width, width - first_label + 1)
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "position_ids": position_ids_from_mask(batch["attention_mask"]),
    }
    try:
        logits = model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep
        logits = model(**inputs).logits
    keep = logits.shape[1]
    return logits.float(), labels[:, width - keep :]


@torch.no_grad()
def score_sequences(
    model: Any,
    examples: Sequence[dict[str, list[int]]],
    pad_token_id: int,
    batch_size: int = 16,
    padding_side: str = "right",
    token_stats: Sequence[bool] | None = None,
    desc: str = "probes",
    sort_by_length: bool = True,
) -> dict[str, Any]:
    """Run the model over encoded examples in padded batches.

    Args:
        model: a causal LM (base, peft-wrapped or merged).
        examples: encoded examples with -100 labels on the prompt.
        pad_token_id: id used for padding (masked out by the attention mask and -100 labels).
        batch_size: sequences per forward.
        padding_side: "right" or "left"; positions are computed from the attention mask, so both give the same
            values.
        token_stats: per example, whether to also return per-token statistics (membership inference).
        desc: tqdm bar label.
        sort_by_length: group similar lengths in a batch (results are returned in the input order).

    Returns:
        {"sum_log_prob": [M], "num_tokens": [M], "token_stats": list of per-example dicts or None}.
    """
    n = len(examples)
    order = sorted(range(n), key=lambda i: -len(examples[i]["input_ids"])) if sort_by_length else list(range(n))
    sum_log_prob = np.zeros(n, dtype=np.float64)
    num_tokens = np.zeros(n, dtype=np.int64)
    stats: list[Any] = [None] * n
    device = model_device(model)
    with eval_mode(model):
        for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
            idx = order[start : start + batch_size]
            batch = pad_examples([examples[i] for i in idx], pad_token_id, padding_side)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits, labels = answer_logits(model, batch)  # [b, K, V], [b, K]
            seq_lp, count = sequence_log_probs(logits, labels)  # [b], [b]
            sum_log_prob[idx] = seq_lp.double().cpu().numpy()
            num_tokens[idx] = count.cpu().numpy()
            if token_stats is not None:
                want = [j for j, i in enumerate(idx) if token_stats[i]]
                if want:
                    for j, row_stats in zip(want, token_statistics(logits[want], labels[want])):
                        stats[idx[j]] = row_stats
    return {"sum_log_prob": sum_log_prob, "num_tokens": num_tokens, "token_stats": stats if token_stats else None}


def probe_rows(
    model: Any,
    formatter: PromptFormatter,
    rows: Sequence[dict[str, Any]],
    batch_size: int = 16,
    mia: bool = False,
    mia_k: float = 0.4,
    padding_side: str = "right",
    desc: str = "probes",
) -> dict[str, Any]:
    """Per-example forward-pass values of one evaluation set (the input layout of `stats.summarize`).

    Args:
        model: a causal LM.
        formatter: the training prompt formatter (same template, same EOS).
        rows: dicts with question, answer, optional paraphrased_answer and perturbed_answer (list).
        batch_size: sequences (not rows) per forward.
        mia: also compute membership scores of the answers (`mia/loss`, `mia/zlib`, `mia/min_k`, `mia/min_k_pp`).
        mia_k: fraction of lowest-scoring tokens for Min-K% and Min-K%++.
        padding_side: batch padding side (results do not depend on it).
        desc: progress bar label.

    Returns:
        {"avg_nll": [N], "num_tokens": [N], "paraphrased_avg_nll": [N] (NaN where none),
        "perturbed_avg_nll": list of N arrays [K_i], and the membership scores [N] when `mia`}.
    """
    examples, keys = build_candidates(rows, formatter)
    wants_stats = [mia and kind == ANSWER for _, kind, _ in keys] if mia else None
    scores = score_sequences(
        model, examples, formatter.tokenizer.pad_token_id, batch_size, padding_side, wants_stats, desc
    )
    avg = -scores["sum_log_prob"] / np.maximum(scores["num_tokens"], 1)  # [M] mean token NLL
    n = len(rows)
    out: dict[str, Any] = {
        "avg_nll": np.full(n, np.nan),
        "num_tokens": np.zeros(n, dtype=np.int64),
        "paraphrased_avg_nll": np.full(n, np.nan),
        "perturbed_avg_nll": [np.zeros(len(row.get("perturbed_answer") or [])) for row in rows],
    }
    answer_stats: list[Any] = [None] * n
    for m, (i, kind, j) in enumerate(keys):
        if kind == ANSWER:
            out["avg_nll"][i] = avg[m]
            out["num_tokens"][i] = scores["num_tokens"][m]
            if mia:
                answer_stats[i] = scores["token_stats"][m]
        elif kind == PARAPHRASE:
            out["paraphrased_avg_nll"][i] = avg[m]
        else:
            out["perturbed_avg_nll"][i][j] = avg[m]
    if mia:
        per_row = [mia_scores(answer_stats[i], rows[i]["answer"], k=mia_k) for i in range(n)]
        for attack in per_row[0] if per_row else []:
            out[f"mia/{attack}"] = np.array([r[attack] for r in per_row], dtype=np.float64)
    return out
