"""Tests for prompt formatting and collation: exact label spans, padding, truncation, forget/retain pairing."""

from __future__ import annotations

import pytest
import torch

from llm_unlearn.data.collate import (
    IGNORE_INDEX,
    ForgetRetainDataset,
    PromptFormatter,
    UnlearnCollator,
    draw_refusals,
    pad_examples,
)
from llm_unlearn.errors import DataError

Q, A = "Who wrote 'The Amber Orchard of Kelvaris'?", "Thaelen Vourstead wrote it in 1962."


def _answer_span(example):
    return [t for t in example["labels"] if t != IGNORE_INDEX]


def test_chat_template_labels_cover_exactly_the_answer_and_eos(tokenizer):
    formatter = PromptFormatter(tokenizer)
    assert formatter.use_chat_template
    example = formatter.encode(Q, A)
    prompt = formatter.prompt_ids(Q)
    n_prompt = len(prompt)
    assert example["input_ids"][:n_prompt] == prompt
    assert example["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert _answer_span(example) == example["input_ids"][n_prompt:]
    assert tokenizer.decode(_answer_span(example)) == A + "<|im_end|>"
    assert example["input_ids"][-1] == tokenizer.eos_token_id == 2
    assert example["attention_mask"] == [1] * len(example["input_ids"])
    # Training ids are the tokenization of the chat conversation the model will be prompted with.
    conversation = [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert tokenizer(text, add_special_tokens=False)["input_ids"][: len(example["input_ids"])] == example["input_ids"]


def test_plain_template_labels_and_text(tokenizer):
    formatter = PromptFormatter(tokenizer, template="Question: {question}\nAnswer:")
    example = formatter.encode(Q, A)
    assert not formatter.use_chat_template
    assert tokenizer.decode(example["input_ids"]) == f"Question: {Q}\nAnswer: {A}<|im_end|>"
    assert tokenizer.decode(_answer_span(example)) == f" {A}<|im_end|>"
    assert example["labels"].count(IGNORE_INDEX) == len(formatter.prompt_ids(Q))


def test_truncation_warns_or_raises(tokenizer):
    n_prompt = len(PromptFormatter(tokenizer).prompt_ids(Q))
    limit = n_prompt + 16  # room for A (about 12 tokens + EOS), not for the long answer
    formatter = PromptFormatter(tokenizer, max_length=limit)
    long_answer = " ".join(["orchard"] * 60)
    with pytest.warns(UserWarning, match="forget.jsonl: 1 example"):
        short, cut = formatter.encode_many([(Q, A), (Q, long_answer)], source="forget.jsonl")
    assert len(cut["input_ids"]) == len(cut["labels"]) == limit
    assert len(_answer_span(cut)) == 16 and _answer_span(short)[-1] == tokenizer.eos_token_id
    strict = PromptFormatter(tokenizer, max_length=limit, truncation="error")
    with pytest.raises(DataError, match=f"forget.jsonl:7: .* exceeds data.max_length={limit}"):
        strict.encode(Q, long_answer, "forget.jsonl:7")
    with pytest.raises(DataError, match="the prompt alone is too long"):
        PromptFormatter(tokenizer, max_length=n_prompt).encode(Q, A)


def test_text_passages_are_chunked_with_every_token_a_label(tokenizer):
    formatter = PromptFormatter(tokenizer, max_length=16)
    text = " ".join(f"word{i}" for i in range(30))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = formatter.encode_text(text)
    assert [len(c["input_ids"]) for c in chunks] == [16] * (len(ids) // 16) + (
        [len(ids) % 16] if len(ids) % 16 else []
    )
    assert sum((c["input_ids"] for c in chunks), []) == ids
    assert all(c["labels"] == c["input_ids"] for c in chunks)


def test_pad_examples_right_and_left_keep_eos_labels_when_pad_equals_eos():
    examples = [
        {"input_ids": [5, 6, 2], "attention_mask": [1, 1, 1], "labels": [IGNORE_INDEX, 6, 2]},
        {"input_ids": [7], "attention_mask": [1], "labels": [7]},
    ]
    right = pad_examples(examples, pad_token_id=2)
    assert right["input_ids"].tolist() == [[5, 6, 2], [7, 2, 2]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right["labels"].tolist() == [[IGNORE_INDEX, 6, 2], [7, IGNORE_INDEX, IGNORE_INDEX]]
    left = pad_examples(examples, pad_token_id=0, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 2], [0, 0, 7]]
    assert left["labels"].tolist() == [[IGNORE_INDEX, 6, 2], [IGNORE_INDEX, IGNORE_INDEX, 7]]
    no_labels = pad_examples([{"input_ids": [1], "attention_mask": [1]}], 0)
    assert set(no_labels) == {"input_ids", "attention_mask"} and no_labels["input_ids"].dtype == torch.long


def _examples(n, base):
    return [
        {
            "input_ids": [base + i] * (1 + i % 3),
            "attention_mask": [1] * (1 + i % 3),
            "labels": [base + i] * (1 + i % 3),
        }
        for i in range(n)
    ]


def test_pairing_is_deterministic_per_seed_and_epoch():
    forget, retain = _examples(6, 100), _examples(6, 200)
    pairs = lambda ds: [ds[i]["retain"]["input_ids"][0] for i in range(len(ds))]  # noqa: E731
    a, b = ForgetRetainDataset(forget, retain, seed=3), ForgetRetainDataset(forget, retain, seed=3)
    assert pairs(a) == pairs(b)
    assert sorted(pairs(a)) == list(range(200, 206))  # a permutation: each retain example once per epoch
    epochs = {tuple(pairs(a))}
    for epoch in range(1, 4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert pairs(a) == pairs(b)
        epochs.add(tuple(pairs(a)))
    assert len(epochs) > 1
    assert [a[i]["forget"]["input_ids"][0] for i in range(6)] == list(range(100, 106))  # forget order untouched
    short = ForgetRetainDataset(forget, _examples(2, 300), seed=0)
    assert sorted(short[i]["retain"]["input_ids"][0] for i in range(6)) == [300, 300, 300, 301, 301, 301]


def test_collator_batches_forget_retain_and_idk():
    forget, retain, idk = _examples(3, 100), _examples(3, 200), _examples(3, 400)
    dataset = ForgetRetainDataset(forget, retain, forget_idk=idk, seed=0)
    batch = UnlearnCollator(pad_token_id=0)([dataset[i] for i in range(3)])
    assert batch["index"].tolist() == [0, 1, 2]
    assert batch["forget"]["input_ids"].tolist() == [[100, 0, 0], [101, 101, 0], [102, 102, 102]]
    assert batch["forget_idk"]["labels"][0].tolist() == [400, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["retain"]["input_ids"].shape[0] == 3
    only_forget = UnlearnCollator(0)([ForgetRetainDataset(forget)[0]])
    assert set(only_forget) == {"index", "forget"}


def test_dataset_and_refusal_errors():
    with pytest.raises(DataError, match="forget set is empty"):
        ForgetRetainDataset([])
    with pytest.raises(ValueError, match="one example per forget example"):
        ForgetRetainDataset(_examples(2, 0), forget_idk=_examples(1, 0))
    with pytest.raises(DataError, match="refusal answers is empty"):
        draw_refusals(3, [], seed=0)
    drawn = draw_refusals(50, ["a", "b", "c"], seed=1)
    assert drawn == draw_refusals(50, ["a", "b", "c"], seed=1) and set(drawn) == {"a", "b", "c"}
