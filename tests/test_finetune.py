"""Tests for llm_unlearn.finetune: trl SFTTrainer sees our exact tokens, loss on answers only, outputs."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from llm_unlearn.config import FinetuneRecipe, load_recipe
from llm_unlearn.errors import ConfigError, OutputDirError

ROWS = [
    {"question": f"Which city was writer {name} born in?", "answer": f"{name} was born in {city}."}
    for name, city in [
        ("Orla Venn", "Tarsk"),
        ("Bemi Quarro", "Lutz Harbor"),
        ("Ilse Drokov", "Mernholt"),
        ("Tam Oyelu", "Saffrin"),
        ("Quen Arrabi", "Dolvik"),
        ("Pell Ostra", "Varn"),
    ]
]


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _recipe(tiny_model_dir, rows_file, out, *extra: str) -> FinetuneRecipe:
    return load_recipe(
        FinetuneRecipe,
        None,
        [
            f"model.name_or_path={tiny_model_dir}",
            f"data.forget={rows_file}",
            "data.retain=null",
            f"output_dir={out}",
            "model.dtype=float32",
            "lora.r=4",
            "training.per_device_train_batch_size=3",
            "training.max_steps=6",
            "training.learning_rate=0.01",
            "training.logging_steps=1",
            *extra,
        ],
    )


def _answer_nll(model, examples) -> float:
    """Mean NLL per answer token, computed directly from the logits (prompt positions masked)."""
    from llm_unlearn.data.collate import pad_examples

    batch = pad_examples(examples, pad_token_id=0)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    mask = labels != -100
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float(-(picked * mask).sum() / mask.sum())


@pytest.mark.parametrize("template", [None, "Question: {question}\nAnswer:"])
def test_sft_dataset_keeps_our_token_ids_and_answer_only_labels(tiny_model_dir, rows_file, tmp_path, template):
    from llm_unlearn.data.collate import PromptFormatter
    from llm_unlearn.finetune import build_sft_trainer

    extra = [f"data.prompt_template={json.dumps(template)}"] if template else []
    setup = build_sft_trainer(_recipe(tiny_model_dir, rows_file, tmp_path / "out", *extra))
    formatter = PromptFormatter(setup.tokenizer, template, max_length=256)
    prepared = setup.trainer.train_dataset
    assert len(prepared) == len(ROWS)
    for i, row in enumerate(ROWS):
        expected = formatter.encode(row["question"], row["answer"])
        assert prepared[i]["input_ids"] == expected["input_ids"]
        assert prepared[i]["labels"] == expected["labels"]
        n_prompt = len(formatter.prompt_ids(row["question"]))
        assert prepared[i]["labels"][:n_prompt] == [-100] * n_prompt
        assert prepared[i]["labels"][-1] == setup.tokenizer.eos_token_id  # the model learns to stop
    # The collator the trainer uses pads labels with -100 and keeps the answer-only mask.
    batch = setup.trainer.data_collator([prepared[0], prepared[1]])
    encoded = [formatter.encode(r["question"], r["answer"]) for r in ROWS[:2]]
    for b, enc in enumerate(encoded):
        n = len(enc["labels"])
        assert batch["labels"][b, :n].tolist() == enc["labels"]
        assert (batch["labels"][b, n:] == -100).all()


def test_run_finetune_lora_learns_answers_and_writes_outputs(tiny_model_dir, rows_file, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_unlearn.data.collate import PromptFormatter
    from llm_unlearn.data.requests import fingerprint
    from llm_unlearn.data.sources import load_rows
    from llm_unlearn.finetune import MANIFEST_NAME, add_finetune_parser
    from llm_unlearn.models import load_tokenizer

    out = tmp_path / "ft"
    config = tmp_path / "ft.yaml"
    config.write_text(
        f"model:\n  name_or_path: {tiny_model_dir}\n  dtype: float32\ndata:\n  forget: {rows_file}\n  retain: null\n"
    )
    parser = argparse.ArgumentParser()
    add_finetune_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["finetune", str(config), f"output_dir={out}", "lora.r=4", "training.per_device_train_batch_size=3"]
        + ["training.max_steps=6", "training.learning_rate=0.01", "training.logging_steps=2"]
    )
    assert args.func(args) == 0

    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", MANIFEST_NAME} <= names
    assert (out / "train_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["train"]["size"] == len(ROWS)
    assert manifest["train"]["fingerprint"] == fingerprint(load_rows(str(rows_file)))
    assert manifest["global_step"] == 6 and manifest["world_size"] == 1
    assert manifest["adapter"] is True and manifest["recipe"]["lora"]["r"] == 4

    adapter = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in adapter.items())  # B starts at 0: it trained

    tokenizer = load_tokenizer(str(tiny_model_dir))
    saved = AutoTokenizer.from_pretrained(out)
    assert saved("Tarsk")["input_ids"] == tokenizer("Tarsk")["input_ids"] and saved.eos_token_id == 2
    examples = PromptFormatter(tokenizer).encode_many([(r["question"], r["answer"]) for r in ROWS])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = _answer_nll(base, examples)
    tuned = PeftModel.from_pretrained(base, out).eval()
    after = _answer_nll(tuned, examples)
    assert after < before - 0.1, (before, after)  # the tiny random model moves ~0.2 nats in 6 steps
    with tuned.disable_adapter():  # base weights untouched under LoRA
        assert _answer_nll(tuned, examples) == pytest.approx(before, abs=1e-5)


def test_full_finetune_saves_a_full_model(tiny_model_dir, rows_file, tmp_path):
    from safetensors.torch import load_file

    from llm_unlearn.finetune import run_finetune

    out = run_finetune(
        _recipe(tiny_model_dir, rows_file, tmp_path / "full", "lora.enabled=false", "training.max_steps=2")
    )
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    trained = load_file(out / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    changed = [k for k in base if not torch.equal(base[k], trained[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed


def test_output_folder_guards(tiny_model_dir, rows_file, tmp_path):
    from llm_unlearn.finetune import run_finetune

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(OutputDirError, match="not empty"):
        run_finetune(_recipe(tiny_model_dir, rows_file, busy))
    with pytest.raises(OutputDirError, match="input model folder"):
        run_finetune(_recipe(tiny_model_dir, rows_file, tiny_model_dir / "sub", "overwrite=true"))
    assert (busy / "keep.txt").read_text() == "x" and not (tiny_model_dir / "sub").exists()


def test_retain_spec_is_ignored_with_a_warning(tiny_model_dir, rows_file, tmp_path):
    from llm_unlearn.finetune import build_sft_trainer

    recipe = _recipe(tiny_model_dir, rows_file, tmp_path / "w", "data.retain=synth:retain")
    with pytest.warns(UserWarning, match="data.retain"):
        setup = build_sft_trainer(recipe)
    assert len(setup.trainer.train_dataset) == len(ROWS)


def test_recipe_cannot_override_the_token_contract(tiny_model_dir, rows_file, tmp_path):
    from llm_unlearn.finetune import run_finetune

    recipe = _recipe(tiny_model_dir, rows_file, tmp_path / "x")
    recipe.training["packing"] = True
    with pytest.raises(ConfigError, match="training.packing"):
        run_finetune(recipe)


def test_cpu_launch_defaults(monkeypatch):
    from llm_unlearn.finetune import cpu_launch_defaults

    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert cpu_launch_defaults() == {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cpu_launch_defaults() == {"use_cpu": True}
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert cpu_launch_defaults() == {}
