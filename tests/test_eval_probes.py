"""Tests of the forward-pass probes, MIA scores and generation on the tiny model, against direct computations."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from llm_unlearn.data.collate import PromptFormatter, pad_examples
from llm_unlearn.eval.generation import generate_answers, rouge_l_recall
from llm_unlearn.eval.probes import answer_logits, build_candidates, probe_rows

ROWS = [
    {
        "question": "Who wrote the novel The Glass Orchard?",
        "answer": "The Glass Orchard was written by Mirela Vostan.",
        "paraphrased_answer": "Mirela Vostan is the author of The Glass Orchard.",
        "perturbed_answer": ["The Glass Orchard was written by Tomas Brell.", "It was written by Ana Quill."],
    },
    {
        "question": "Where was Mirela Vostan born?",
        "answer": "She was born in Kelvara.",
        "paraphrased_answer": "Kelvara is her birthplace.",
        "perturbed_answer": ["She was born in Dorsk.", "She was born in the coastal town of Ambrel, far away."],
    },
    {
        "question": "What is the capital of France?",
        "answer": "Paris",
        "perturbed_answer": ["Lyon", "Marseille", "Nice"],
    },
]


def direct_token_log_probs(model, formatter, question, answer):
    """Unbatched, unpadded forward; log-softmax by hand; [n] log-probs of the answer tokens and [n, V] log-probs."""
    ex = formatter.encode(question, answer)
    ids = torch.tensor([ex["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()  # [T, V]
    n_prompt = sum(1 for label in ex["labels"] if label == -100)
    log_p = torch.log_softmax(logits, dim=-1)[n_prompt - 1 : -1]  # rows predicting the answer tokens
    targets = torch.tensor(ex["input_ids"][n_prompt:])
    return log_p.gather(-1, targets[:, None]).squeeze(-1).numpy(), log_p


@pytest.fixture
def formatter(tokenizer):
    return PromptFormatter(tokenizer, max_length=128)


def test_probabilities_match_direct_computation(tiny_model, formatter):
    out = probe_rows(tiny_model, formatter, ROWS, batch_size=4)
    for i, row in enumerate(ROWS):
        lp, _ = direct_token_log_probs(tiny_model, formatter, row["question"], row["answer"])
        assert out["avg_nll"][i] == pytest.approx(-lp.mean(), abs=1e-5)
        assert out["num_tokens"][i] == len(lp)
        if "paraphrased_answer" in row:
            lp, _ = direct_token_log_probs(tiny_model, formatter, row["question"], row["paraphrased_answer"])
            assert out["paraphrased_avg_nll"][i] == pytest.approx(-lp.mean(), abs=1e-5)
        else:
            assert np.isnan(out["paraphrased_avg_nll"][i])
        for j, text in enumerate(row["perturbed_answer"]):
            lp, _ = direct_token_log_probs(tiny_model, formatter, row["question"], text)
            assert out["perturbed_avg_nll"][i][j] == pytest.approx(-lp.mean(), abs=1e-5)


def test_mia_scores_match_direct_computation(tiny_model, formatter):
    out = probe_rows(tiny_model, formatter, ROWS, batch_size=16, mia=True, mia_k=0.4)
    for i, row in enumerate(ROWS):
        lp, log_p = direct_token_log_probs(tiny_model, formatter, row["question"], row["answer"])
        p = log_p.exp()
        mu = (p * log_p).sum(-1).numpy()
        sigma = np.sqrt((p * log_p**2).sum(-1).numpy() - mu**2)
        k = max(1, int(len(lp) * 0.4))
        assert out["mia/loss"][i] == pytest.approx(lp.mean(), abs=1e-5)
        assert out["mia/zlib"][i] == pytest.approx(lp.mean() / len(zlib.compress(row["answer"].encode())), abs=1e-6)
        assert out["mia/min_k"][i] == pytest.approx(np.sort(lp)[:k].mean(), abs=1e-5)
        assert out["mia/min_k_pp"][i] == pytest.approx(np.sort((lp - mu) / sigma)[:k].mean(), abs=1e-4)


def test_padding_side_and_batch_size_do_not_change_probabilities(tiny_model, formatter):
    base = probe_rows(tiny_model, formatter, ROWS, batch_size=1)
    for batch_size, side in ((16, "right"), (16, "left"), (3, "left")):
        other = probe_rows(tiny_model, formatter, ROWS, batch_size=batch_size, padding_side=side)
        np.testing.assert_allclose(other["avg_nll"], base["avg_nll"], atol=1e-5)
        np.testing.assert_allclose(other["paraphrased_avg_nll"], base["paraphrased_avg_nll"], atol=1e-5)
        for a, b in zip(other["perturbed_avg_nll"], base["perturbed_avg_nll"]):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_base_peft_and_merged_models_agree(tiny_model, formatter):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_alpha=8))
    torch.manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)  # a non-trivial adapter
    with peft_model.disable_adapter():
        base = probe_rows(peft_model, formatter, ROWS[:2])["avg_nll"]
    adapted = probe_rows(peft_model, formatter, ROWS[:2])["avg_nll"]
    assert not np.allclose(base, adapted, atol=1e-3)
    merged = probe_rows(peft_model.merge_and_unload(), formatter, ROWS[:2])["avg_nll"]
    np.testing.assert_allclose(merged, adapted, atol=1e-4)


def test_probe_restores_training_mode(tiny_model, formatter):
    tiny_model.train()
    probe_rows(tiny_model, formatter, ROWS[:1])
    assert tiny_model.training
    tiny_model.eval()
    probe_rows(tiny_model, formatter, ROWS[:1])
    assert not tiny_model.training


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_model, formatter):
    questions = [r["question"] for r in ROWS]
    batched = generate_answers(tiny_model, formatter, questions, batch_size=3, max_new_tokens=6)
    single = [generate_answers(tiny_model, formatter, [q], batch_size=1, max_new_tokens=6)[0] for q in questions]
    assert batched == single
    # and equals a hand-written greedy loop (argmax of full forwards, stop at EOS)
    ids = formatter.prompt_ids(questions[1])
    new = []
    with torch.no_grad():
        for _ in range(6):
            token = tiny_model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax().item()
            if token == formatter.tokenizer.eos_token_id:
                break
            new.append(token)
    assert batched[1] == formatter.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_rouge_l_recall_on_fixed_strings():
    scores = rouge_l_recall(
        ["the cat on a mat", "running dogs", "completely unrelated", ""],
        ["the cat sat on the mat", "run dog", "The Glass Orchard", "anything"],
    )
    # LCS "the cat on mat" = 4 of 6 reference tokens; stemming maps running->run, dogs->dog
    np.testing.assert_allclose(scores, [4 / 6, 1.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        rouge_l_recall(["a"], [])


def test_rows_with_wrong_fields_raise_naming_the_record(tiny_model, formatter):
    from llm_unlearn.errors import DataError

    with pytest.raises(DataError, match="forget.jsonl:3: field 'answer'"):
        probe_rows(tiny_model, formatter, [{"question": "q", "source": "forget.jsonl:3"}])
    with pytest.raises(DataError, match="record 0: field 'perturbed_answer'"):
        probe_rows(tiny_model, formatter, [{"question": "q", "answer": "a", "perturbed_answer": "not a list"}])


@pytest.mark.parametrize("side", ["right", "left"])
def test_answer_logits_keep_only_answer_predicting_positions(tiny_model, formatter, side):
    examples, _ = build_candidates(ROWS, formatter)
    batch = pad_examples(examples, formatter.tokenizer.pad_token_id, side)
    logits, labels = answer_logits(tiny_model, batch)
    width = batch["labels"].shape[1]
    assert logits.shape[:2] == labels.shape and labels.shape[1] < width  # the prompt-only prefix is cut
    assert (labels != -100).sum() == (batch["labels"] != -100).sum()  # no answer token lost
    assert (labels[:, 0] == -100).all()  # position 0 of the kept window predicts the first answer token
