"""UnlearnTrainer on tiny Llamas: reference handling, accumulation, precompute, guards, LoRA weights, learning."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback, TrainingArguments

from llm_unlearn.data.collate import ForgetRetainDataset, UnlearnCollator, pad_examples
from llm_unlearn.errors import ConfigError, TrainingDivergedError
from llm_unlearn.losses import sequence_log_probs, token_nll
from llm_unlearn.methods import Method, Term, get_method, register_method
from llm_unlearn.trainer import UnlearnTrainer

VOCAB = 96
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; several threads on a shared CPU mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_llama(seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer hidden-32 Llama with a 96-token vocabulary (fast on CPU), float32, no dropout."""
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float()


def examples(seed: int, count: int, low: int, high: int) -> list[dict[str, list[int]]]:
    """Encoded (prompt, answer) examples with varying prompt and answer lengths; answers use tokens [low, high)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        prompt = [1] + torch.randint(3, 10, (2 + i % 3,), generator=g).tolist()
        answer = torch.randint(low, high, (3 + (i * 5) % 7,), generator=g).tolist() + [2]
        ids = prompt + answer
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(prompt) + answer})
    return out


FORGET = examples(0, 8, 10, 50)
RETAIN = examples(1, 8, 50, 90)
IDK = examples(2, 8, 90, 96)


def lora(model, seed: int = 1, perturb: bool = True):
    """Wrap in LoRA; with `perturb`, give lora_B random values so the adapter changes the outputs."""
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM"))
    if perturb:
        g = torch.Generator().manual_seed(seed)
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.data = torch.randn(p.shape, generator=g) * 0.5
    return peft


def make_args(tmp_path, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    base.update(kw)
    return TrainingArguments(**base)


def dataset(idk: bool = False) -> ForgetRetainDataset:
    return ForgetRetainDataset(FORGET, RETAIN, IDK if idk else None, seed=0)


def full_batch(items: list[dict]) -> dict[str, torch.Tensor]:
    return pad_examples(items, 0)


def nll(model, items) -> float:
    b = full_batch(items)
    with torch.no_grad():
        return token_nll(
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
        ).item()


def test_adapter_off_log_probs_equal_untouched_base(tiny_model):
    base = copy.deepcopy(tiny_model).eval()
    b = full_batch(FORGET[:4])
    peft = lora(tiny_model)
    trainer = UnlearnTrainer(peft, make_args("unused"), dataset(), method="npo")
    with torch.no_grad():
        expected, _ = sequence_log_probs(
            base(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
        )
        with_adapter, _ = sequence_log_probs(
            peft(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
        )
    reference, _ = sequence_log_probs(trainer.reference_logits(peft, b), b["labels"])
    assert trainer.ref_model is None  # no second copy under LoRA
    assert (with_adapter - expected).abs().max().item() > 1e-2  # the adapter does change the model
    assert torch.allclose(reference, expected, atol=1e-5, rtol=0)
    assert peft.training  # train mode restored after the reference forward


def test_lora_training_changes_adapter_not_base(tmp_path):
    peft = lora(small_llama(), perturb=False)
    before = {n: p.detach().clone() for n, p in peft.named_parameters()}
    UnlearnTrainer(peft, make_args(tmp_path, max_steps=3), dataset(), method="npo_rt").train()
    after = dict(peft.named_parameters())
    lora_changed = [n for n in before if "lora_" in n and not torch.equal(before[n], after[n])]
    base_changed = [n for n in before if "lora_" not in n and not torch.equal(before[n], after[n])]
    assert lora_changed and not base_changed
    assert all(not after[n].requires_grad for n in before if "lora_" not in n)


class GradCapture(TrainerCallback):
    """Grabs the gradients right before the (first) optimizer step."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["grad_diff", "npo_kl", "idk_dpo"])
def test_gradient_accumulation_2x4_equals_1x8(tmp_path, method):
    """Token means over answers of different lengths, sequence means and KL: same gradient either way."""
    grads = []
    for bs, accum in ((8, 1), (4, 2)):
        model = small_llama()  # full fine-tuning; npo_kl gets a frozen deep copy as reference
        capture = GradCapture(model)
        args = make_args(tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=accum, max_grad_norm=0)
        trainer = UnlearnTrainer(model, args, dataset(idk=True), method=method, callbacks=[capture])
        trainer.train()
        grads.append(capture.grads)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)


def test_precomputed_reference_equals_online(tmp_path, monkeypatch):
    batch = UnlearnCollator(0)([dataset(idk=True)[i] for i in (5, 0, 3, 6)])  # indices out of order
    losses, calls = {}, []
    for precompute in (False, True):
        peft = lora(small_llama())
        trainer = UnlearnTrainer(
            peft, make_args(tmp_path), dataset(idk=True), "idk_dpo", precompute_reference=precompute
        )
        if precompute:
            trainer.precompute_reference_log_probs()
            monkeypatch.setattr(trainer, "reference_logits", lambda *a: calls.append(a))
        out_loss, out = trainer.compute_loss(peft, batch, return_outputs=True)
        losses[precompute] = (out_loss.item(), out.forget.ref_logp, out.forget_idk.ref_logp)
    assert calls == []  # no reference forward per step once precomputed
    assert losses[True][0] == pytest.approx(losses[False][0], abs=1e-5)
    torch.testing.assert_close(losses[True][1], losses[False][1], atol=1e-5, rtol=0)
    torch.testing.assert_close(losses[True][2], losses[False][2], atol=1e-5, rtol=0)


def test_simnpo_never_calls_the_reference(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("reference used")

    monkeypatch.setattr(UnlearnTrainer, "reference_logits", boom)
    monkeypatch.setattr(UnlearnTrainer, "precompute_reference_log_probs", boom)
    peft = lora(small_llama())
    monkeypatch.setattr(type(peft), "disable_adapter", boom)
    trainer = UnlearnTrainer(peft, make_args(tmp_path, max_steps=2), dataset(), method="simnpo")
    trainer.train()
    assert trainer.ref_model is None and trainer.precompute_sides == []
    assert "ref/logratio" not in trainer.state.log_history[0]


def test_kl_is_zero_when_model_equals_reference(tmp_path):
    peft = lora(small_llama(), perturb=False)  # lora_B = 0: the adapter is the identity
    trainer = UnlearnTrainer(peft, make_args(tmp_path), dataset(), method="grad_ascent_kl")
    trainer.compute_loss(peft, UnlearnCollator(0)([dataset()[i] for i in range(4)]))
    assert trainer._metrics["train"]["retain/kl"] == [pytest.approx(0.0, abs=1e-7)]


def test_metrics_are_logged_separately(tmp_path):
    trainer = UnlearnTrainer(lora(small_llama(), perturb=False), make_args(tmp_path, max_steps=2), dataset(), "npo_kl")
    trainer.train()
    logs = trainer.state.log_history[0]
    for key in ("loss", "forget/loss", "forget/nll", "retain/loss", "retain/nll", "retain/kl", "ref/logratio"):
        assert key in logs, key
    assert logs["ref/logratio"] == pytest.approx(0.0, abs=1e-5)  # first step: model == reference
    assert logs["loss"] == pytest.approx(logs["forget/loss"] + logs["retain/loss"], rel=1e-4)


def test_forget_nll_rises_while_retain_nll_stays_bounded(tmp_path):
    """Fit the tiny model on forget + retain, then unlearn: forget NLL rises, retain NLL stays near its start."""
    model = small_llama()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    both = full_batch(FORGET + RETAIN)
    for _ in range(40):
        loss = token_nll(
            model(input_ids=both["input_ids"], attention_mask=both["attention_mask"]).logits, both["labels"]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    forget0, retain0 = nll(model, FORGET), nll(model, RETAIN)
    assert forget0 < 1.0 and retain0 < 1.0
    results = {}
    for method in ("grad_ascent", "grad_diff", "npo_rt"):
        peft = lora(copy.deepcopy(model), perturb=False)
        args = make_args(tmp_path, max_steps=10, learning_rate=2e-2, logging_steps=100)
        UnlearnTrainer(peft, args, dataset(), method=method).train()
        results[method] = (nll(peft, FORGET), nll(peft, RETAIN))
    # measured: forget 13.4 / 9.7 / 9.3, retain 13.4 / 1.1 / 0.5 for grad_ascent / grad_diff / npo_rt
    for method, (forget, _) in results.items():
        assert forget > forget0 + 5.0, (method, forget0, forget)
    assert results["grad_ascent"][1] > retain0 + 5.0  # without a retain term the retain set is damaged too
    for method in ("grad_diff", "npo_rt"):
        assert results[method][1] < retain0 + 2.0, (method, retain0, results[method])


def test_forget_nll_ceiling_stops_training(tmp_path):
    peft = lora(small_llama())
    trainer = UnlearnTrainer(peft, make_args(tmp_path, max_steps=3), dataset(), "grad_ascent", forget_nll_ceiling=1.0)
    with pytest.raises(TrainingDivergedError, match=r"step 1: forget NLL per token [\d.]+ exceeds .*ceiling=1"):
        trainer.train()


def test_nan_loss_stops_training_and_nan_adapter_is_not_saved(tmp_path):
    def nan_term(out, hp):
        return out.forget.logp.mean() * float("nan")

    term = Term("nan", nan_term, side="forget", unit="sequences", needs=("forget",), formula="nan")
    method = Method("nan_test", term, None, get_method("grad_ascent").defaults, "", "nan", frozenset({"forget"}))
    peft = lora(small_llama())
    trainer = UnlearnTrainer(peft, make_args(tmp_path / "run", max_steps=2), dataset(), method=method)
    with pytest.raises(TrainingDivergedError, match=r"step 1: (loss|forget/loss) is nan"):
        trainer.train()
    next(p for n, p in peft.named_parameters() if "lora_A" in n).data[0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="not finite; not saved"):
        trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "adapter_model.safetensors").exists()


def test_missing_retain_or_refusals_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="needs a retain set"):
        UnlearnTrainer(small_llama(), make_args(tmp_path), ForgetRetainDataset(FORGET), method="npo_rt")
    with pytest.raises(ConfigError, match="refusal answers"):
        UnlearnTrainer(small_llama(), make_args(tmp_path), dataset(idk=False), method="idk_nll")


def test_full_finetuning_reference_is_a_frozen_copy_only_when_needed(tmp_path):
    model = small_llama()
    trainer = UnlearnTrainer(model, make_args(tmp_path), dataset(), method="npo_kl")
    ref = trainer.ref_model
    assert ref is not None and ref is not model and not ref.training
    assert not any(p.requires_grad for p in ref.parameters())
    # precomputed NPO without KL needs no copy: the model at step 0 is the reference
    assert UnlearnTrainer(small_llama(), make_args(tmp_path), dataset(), method="npo_rt").ref_model is None
    with pytest.raises(ValueError, match="already registered"):
        register_method("npo_kl", get_method("npo").forget_term)
