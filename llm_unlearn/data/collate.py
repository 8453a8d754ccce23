"""Prompt formatting, label masking, padding and forget/retain pairing. No file reading here.

Conventions used by the trainer and the evaluator:
- An encoded example is a dict of python lists: `input_ids`, `attention_mask`, `labels`, where
  `labels` is -100 on prompt tokens and equals `input_ids` on answer tokens (+ the end-of-turn token).
- Prompt and answer are tokenized separately and concatenated, so the answer span is exact.
- Padding never relies on the pad token id to find padding: labels are padded with -100 and the
  attention mask with 0, so a pad token equal to EOS cannot hide a real end-of-turn token.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llm_unlearn.errors import DataError

IGNORE_INDEX = -100
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"


class PromptFormatter:
    """Turns (question, answer) pairs into token ids with the prompt masked out of the labels.

    Args:
        tokenizer: a Hugging Face tokenizer with `eos_token_id` set to the end-of-turn token.
        template: a `str.format` template with `{question}`; None uses the tokenizer's chat template
            when it has one, else `PLAIN_TEMPLATE`.
        max_length: maximum total tokens; longer examples are truncated (answer side) with a warning,
            or raise `DataError` when `truncation="error"`.
        truncation: "warn" or "error".
    """

    def __init__(self, tokenizer: Any, template: str | None = None, max_length: int = 256, truncation: str = "warn"):
        if tokenizer.eos_token_id is None:
            raise DataError("tokenizer has no eos_token_id: cannot mark the end of an answer")
        self.tokenizer = tokenizer
        self.use_chat_template = template is None and bool(getattr(tokenizer, "chat_template", None))
        self.template = template or PLAIN_TEMPLATE
        self.max_length = max_length
        self.truncation = truncation
        self.num_truncated = 0

    def prompt_text(self, question: str) -> str:
        """The text the model sees before the answer (also the generation prompt)."""
        if self.use_chat_template:
            messages = [{"role": "user", "content": question}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.template.format(question=question)

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the prompt (BOS added by the tokenizer only for plain templates)."""
        text = self.prompt_text(question)
        return self.tokenizer(text, add_special_tokens=not self.use_chat_template)["input_ids"]

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of the answer followed by the end-of-turn (EOS) token."""
        text = answer if self.use_chat_template else " " + answer.lstrip()
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def encode(self, question: str, answer: str, where: str = "") -> dict[str, list[int]]:
        """Encode one pair. `where` (e.g. 'forget.jsonl line 3') names the record in errors and warnings."""
        prompt = self.prompt_ids(question)
        answer_ids = self.answer_ids(answer)
        total = len(prompt) + len(answer_ids)
        if total > self.max_length:
            if self.truncation == "error" or len(prompt) >= self.max_length:
                raise DataError(
                    f"{where or 'example'}: {total} tokens exceeds data.max_length={self.max_length}"
                    + (" (the prompt alone is too long)" if len(prompt) >= self.max_length else "")
                )
            self.num_truncated += 1
            answer_ids = answer_ids[: self.max_length - len(prompt)]
        input_ids = prompt + answer_ids
        return {
            "input_ids": input_ids,
            "attention_mask": [1] * len(input_ids),
            "labels": [IGNORE_INDEX] * len(prompt) + answer_ids,
        }

    def encode_text(self, text: str, where: str = "") -> list[dict[str, list[int]]]:
        """Encode a raw passage for text unlearning: chunks of `max_length` tokens, every token a label."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise DataError(f"{where or 'passage'}: text is empty after tokenization")
        chunks = [ids[i : i + self.max_length] for i in range(0, len(ids), self.max_length)]
        return [{"input_ids": c, "attention_mask": [1] * len(c), "labels": list(c)} for c in chunks]

    def encode_many(
        self, pairs: Sequence[tuple[str, str]], source: str = "", wheres: Sequence[str] | None = None
    ) -> list[dict[str, list[int]]]:
        """Encode many pairs; warns once with the count of truncated examples.

        Args:
            pairs: (question, answer) pairs.
            source: the data set's name, for the warning.
            wheres: per-pair locations for errors (e.g. each row's "file:line"); default "{source} record {i}"
                counted from 1.
        """
        before = self.num_truncated
        wheres = wheres or [f"{source} record {i}" for i in range(1, len(pairs) + 1)]
        out = [self.encode(q, a, where) for (q, a), where in zip(pairs, wheres)]
        truncated = self.num_truncated - before
        if truncated:
            warnings.warn(
                f"{source or 'data'}: {truncated} example(s) longer than max_length={self.max_length} were truncated",
                stacklevel=2,
            )
        return out


def pad_examples(
    examples: Sequence[dict[str, list[int]]], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad encoded examples into a batch.

    Returns:
        `input_ids` [B, T] (pad_token_id), `attention_mask` [B, T] (0 on padding), `labels` [B, T]
        (-100 on padding) — `labels` only when every example has them.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(e["input_ids"]) for e in examples)
    fills = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    keys = [k for k in fills if all(k in e for e in examples)]
    batch = {}
    for key in keys:
        rows = []
        for e in examples:
            pad = [fills[key]] * (width - len(e[key]))
            rows.append(e[key] + pad if padding_side == "right" else pad + e[key])
        batch[key] = torch.tensor(rows, dtype=torch.long)
    return batch


class ForgetRetainDataset(torch.utils.data.Dataset):
    """Pairs each forget example with a retain example drawn by a seeded permutation.

    Item i is `{"index": i, "forget": ..., "retain": ..., "forget_idk": ...}` (the last two only when
    given). The retain permutation is redrawn per epoch (`set_epoch`, called by the trainer), so
    every process under DDP sees the same pairing for the same index.
    """

    def __init__(
        self,
        forget: Sequence[dict[str, list[int]]],
        retain: Sequence[dict[str, list[int]]] | None = None,
        forget_idk: Sequence[dict[str, list[int]]] | None = None,
        seed: int = 0,
    ):
        if not forget:
            raise DataError("the forget set is empty")
        if forget_idk is not None and len(forget_idk) != len(forget):
            raise ValueError("forget_idk must have one example per forget example")
        self.forget = list(forget)
        self.retain = list(retain) if retain else None
        self.forget_idk = list(forget_idk) if forget_idk is not None else None
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if self.retain:
            rng = random.Random(f"{self.seed}-{epoch}")
            self._retain_order = rng.sample(range(len(self.retain)), len(self.retain))

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": index, "forget": self.forget[index]}
        if self.retain:
            item["retain"] = self.retain[self._retain_order[index % len(self.retain)]]
        if self.forget_idk is not None:
            item["forget_idk"] = self.forget_idk[index]
        return item


@dataclass
class UnlearnCollator:
    """Collates `ForgetRetainDataset` items into `{"index": [B], "forget": {...}, "retain": {...}, ...}`."""

    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
        for key in ("forget", "retain", "forget_idk"):
            if key in items[0]:
                batch[key] = pad_examples([it[key] for it in items], self.pad_token_id, self.padding_side)
        return batch


def draw_refusals(count: int, refusals: Sequence[str], seed: int) -> list[str]:
    """One refusal answer per forget example, drawn with a seeded generator (fixed for the run)."""
    if not refusals:
        raise DataError("the list of refusal answers is empty")
    rng = random.Random(seed)
    return [rng.choice(list(refusals)) for _ in range(count)]
