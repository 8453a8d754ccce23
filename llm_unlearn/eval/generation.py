"""Batched greedy generation (left padding) and ROUGE-L recall against reference answers. No aggregation here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rouge_score import rouge_scorer
from tqdm.auto import tqdm

from llm_unlearn.data.collate import PromptFormatter, pad_examples
from llm_unlearn.eval.probes import eval_mode, model_device


@torch.no_grad()
def generate_answers(
    model: Any,
    formatter: PromptFormatter,
    questions: Sequence[str],
    batch_size: int = 16,
    max_new_tokens: int = 64,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers to `questions`, prompted exactly as in training.

    Prompts are left-padded (so every row's next token sits at the last position) and sorted by length to waste
    little padding; answers come back in the input order, decoded without special tokens and stripped.
    Generation stops at the formatter's end-of-turn token or after `max_new_tokens`.
    """
    tokenizer = formatter.tokenizer
    prompts = [formatter.prompt_ids(q) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers = [""] * len(prompts)
    device = model_device(model)
    with eval_mode(model):
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
            idx = order[start : start + batch_size]
            batch = pad_examples(
                [{"input_ids": prompts[i], "attention_mask": [1] * len(prompts[i])} for i in idx],
                tokenizer.pad_token_id,
                padding_side="left",
            )
            input_ids = batch["input_ids"].to(device)  # [b, T]
            output = model.generate(
                input_ids=input_ids,
                attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )  # [b, T + new]
            new_tokens = output[:, input_ids.shape[1] :]
            for j, text in zip(idx, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                answers[j] = text.strip()
    return answers


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L recall of each prediction against its reference (`rouge-score`, `use_stemmer=True`, as TOFU).

    Returns:
        [N] recalls: the longest common subsequence over the reference's token count.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array(
        [scorer.score(ref, pred)["rougeL"].recall for pred, ref in zip(predictions, references)], dtype=np.float64
    )
