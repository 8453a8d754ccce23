"""Tests for llm_unlearn.merge: merged weights reproduce the adapter model, guards, manifests carried along."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from llm_unlearn.errors import OutputDirError


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model with non-zero B (so merging changes the weights), plus run outputs."""
    from transformers import AutoModelForCausalLM

    from llm_unlearn.config import LoraConfig
    from llm_unlearn.models import attach_lora

    path = tmp_path_factory.mktemp("adapter")
    model = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), LoraConfig(r=4))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    model.save_pretrained(path)
    (path / "unlearn_manifest.json").write_text(json.dumps({"method": {"name": "npo_rt"}}))
    (path / "eval").mkdir()
    (path / "eval" / "summary.json").write_text(json.dumps({"model_utility": 0.5}))
    return path


def _inputs():
    gen = torch.Generator().manual_seed(1)
    return torch.randint(3, 5000, (2, 12), generator=gen)


def test_merge_reproduces_adapter_logits_and_carries_manifests(tiny_model_dir, adapter_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llm_unlearn.merge import MERGE_MANIFEST, add_merge_parser

    out = tmp_path / "merged"
    parser = argparse.ArgumentParser()
    add_merge_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["merge", "--base", str(tiny_model_dir), "--adapter", str(adapter_dir), "--out", str(out)]
    )
    assert args.func(args) == 0

    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert "adapter_config.json" not in names
    assert json.loads((out / "unlearn_manifest.json").read_text()) == {"method": {"name": "npo_rt"}}
    assert json.loads((out / "eval" / "summary.json").read_text()) == {"model_utility": 0.5}
    manifest = json.loads((out / MERGE_MANIFEST).read_text())
    assert manifest["check"]["max_abs_logit_diff"] <= manifest["check"]["tolerance"]
    assert set(manifest["weights_sha256"]) == {"model.safetensors"}

    ids = _inputs()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)  # no peft needed
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, adapter_dir).eval()
        want = adapted(ids).logits
        got = merged(ids).logits
    assert (want - base_logits).abs().max() > 1e-3  # the adapter really changes the model
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_merge_refuses_busy_or_base_folders(tiny_model_dir, adapter_dir, tmp_path):
    from llm_unlearn.merge import merge_adapter

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("keep")
    with pytest.raises(OutputDirError, match="not empty"):
        merge_adapter(str(tiny_model_dir), str(adapter_dir), str(busy))
    with pytest.raises(OutputDirError, match="input model folder"):
        merge_adapter(str(tiny_model_dir), str(adapter_dir), str(tiny_model_dir), overwrite=True)
    with pytest.raises(OutputDirError, match="input model folder"):
        merge_adapter(str(tiny_model_dir), str(adapter_dir), str(adapter_dir / "merged"), overwrite=True)


def test_merge_fails_loudly_when_merged_logits_differ(tiny_model_dir, adapter_dir, tmp_path, monkeypatch):
    from peft.tuners.lora import LoraModel

    from llm_unlearn.merge import MergeCheckError, merge_adapter

    original = LoraModel.merge_and_unload

    def broken_merge(self, *args, **kwargs):
        model = original(self, *args, **kwargs)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.add_(0.5)  # a merge bug
        return model

    monkeypatch.setattr(LoraModel, "merge_and_unload", broken_merge)
    out = tmp_path / "bad"
    with pytest.raises(MergeCheckError, match="nothing was saved"):
        merge_adapter(str(tiny_model_dir), str(adapter_dir), str(out))
    assert not out.exists()


def test_merge_in_bfloat16_within_tolerance(tiny_model_dir, adapter_dir, tmp_path):
    from safetensors.torch import load_file

    from llm_unlearn.merge import merge_adapter

    out = merge_adapter(str(tiny_model_dir), str(adapter_dir), str(tmp_path / "bf16"), dtype="bfloat16")
    weights = load_file(out / "model.safetensors")
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16


def test_merge_applies_the_runs_input_adapter_first(tiny_model_dir, adapter_dir, tmp_path):
    """An unlearn run from a fine-tuned LoRA trains on base + that LoRA: the merge must stack both."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llm_unlearn.config import LoraConfig
    from llm_unlearn.errors import ModelLoadError
    from llm_unlearn.merge import merge_adapter
    from llm_unlearn.models import attach_lora
    from llm_unlearn.unlearn import weights_sha256

    def load_target():
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()

    unlearned = tmp_path / "unlearned"
    model = attach_lora(load_target(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    model.save_pretrained(unlearned)
    manifest = {"input_adapter": str(adapter_dir), "input_adapter_sha256": weights_sha256(adapter_dir)}
    (unlearned / "unlearn_manifest.json").write_text(json.dumps(manifest))

    out = merge_adapter(str(tiny_model_dir), str(unlearned), str(tmp_path / "merged"))
    ids = _inputs()
    with torch.no_grad():
        want = PeftModel.from_pretrained(load_target(), unlearned).eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert json.loads((out / "merge_manifest.json").read_text())["input_adapter"] == str(adapter_dir)

    manifest["input_adapter_sha256"] = {"adapter_model.safetensors": "0" * 64}
    (unlearned / "unlearn_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="changed since the run"):
        merge_adapter(str(tiny_model_dir), str(unlearned), str(tmp_path / "merged2"))
    assert not (tmp_path / "merged2").exists()
