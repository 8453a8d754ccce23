"""Slow runs: 2 CPU processes under DDP (gloo), DeepSpeed ZeRO-2/3 (DS_ACCELERATOR=cpu); the CLI end to end.

Each launch is compared with a single-process run of the same recipe at the same global batch
(2 processes x 2 examples == 1 process x 4 examples): the saved weights must agree to ATOL (measured
differences are ~1e-7, float32 reduction order), both ranks must finish, and the manifest must be
written once, by the main process (seen by an audit hook in tests/dist_run.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5
COMMON = [
    "model.dtype=float32",
    "lora.r=4",
    "training.learning_rate=0.01",
    "training.max_steps=3",  # 8 rows / global batch 4: crosses an epoch, so the reshuffle must match too
    "training.logging_steps=1",
]
ROWS = [
    {"question": f"Which city was writer number {i} born in?", "answer": f"Writer {i} was born in Zel{i}."}
    for i in range(8)
]
LAUNCHES = {
    "ddp": ["--config_file", "configs/accelerate/cpu_ddp.yaml"],
    "zero2": ["--config_file", "configs/accelerate/zero2.yaml", "--num_processes", "2"],
    "zero3": ["--config_file", "configs/accelerate/zero3.yaml", "--num_processes", "2"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(kind: str, launch: str, config: Path, audit: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    audit.mkdir(parents=True)
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "LLM_UNLEARN_CACHE": os.environ["LLM_UNLEARN_CACHE"],
    }
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCHES[launch]]
    cmd += ["--main_process_port", str(_free_port()), "tests/dist_run.py", str(audit), kind, "--config", str(config)]
    proc = subprocess.run(cmd + overrides, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _check_ranks(audit: Path, out: Path, manifest_name: str) -> None:
    ranks = {r["rank"]: r for r in (json.loads(p.read_text()) for p in audit.glob("rank*.json"))}
    assert sorted(ranks) == [0, 1], "both ranks must finish"
    assert all(r["exit"] == 0 and r["world_size"] == 2 for r in ranks.values())
    manifest = str(out / manifest_name)
    assert ranks[0]["writes"] == [manifest] and ranks[1]["writes"] == [], ranks
    assert json.loads((out / manifest_name).read_text())["world_size"] == 2


def _assert_same_weights(got_dir: Path, want_dir: Path, name: str) -> None:
    from safetensors.torch import load_file

    got, want = load_file(got_dir / name), load_file(want_dir / name)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=ATOL, rtol=0, msg=lambda m, k=key: f"{k}: {m}")


def _assert_moved(out: Path, name: str) -> None:
    """Training moved the weights by far more than ATOL, so agreeing to ATOL is not trivially true."""
    from safetensors.torch import load_file

    weights = load_file(out / name)
    if name.startswith("adapter"):  # lora_B starts at zero
        moved = max(float(v.abs().max()) for k, v in weights.items() if "lora_B" in k)
    else:
        base = load_file(Path(json.loads((out / "unlearn_manifest.json").read_text())["base_model"]) / name)
        moved = max(float((weights[k] - base[k]).abs().max()) for k in base)
    assert moved > 100 * ATOL, moved


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("dist")
    rows = root / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    config = root / "finetune.yaml"
    config.write_text(f"model:\n  name_or_path: {tiny_model_dir}\ndata:\n  forget: {rows}\n  retain: null\n")
    return root, config


@pytest.fixture(scope="module")
def finetune_single(workdir):
    from llm_unlearn.config import FinetuneRecipe, load_recipe
    from llm_unlearn.finetune import run_finetune

    root, config = workdir
    overrides = COMMON + [f"output_dir={root / 'ft-single'}", "training.per_device_train_batch_size=4"]
    return run_finetune(load_recipe(FinetuneRecipe, config, overrides))


@pytest.mark.parametrize("launch", list(LAUNCHES))
def test_finetune_two_processes_match_one(launch, workdir, finetune_single):
    root, config = workdir
    out = root / f"ft-{launch}"
    overrides = COMMON + [f"output_dir={out}", "training.per_device_train_batch_size=2"]
    _launch("finetune", launch, config, root / f"audit-ft-{launch}", overrides)
    _check_ranks(root / f"audit-ft-{launch}", out, "finetune_manifest.json")
    _assert_same_weights(out, finetune_single, "adapter_model.safetensors")
    _assert_moved(out, "adapter_model.safetensors")
    single = json.loads((finetune_single / "finetune_manifest.json").read_text())
    multi = json.loads((out / "finetune_manifest.json").read_text())
    assert multi["global_step"] == single["global_step"] == 3
    assert multi["train_loss"] == pytest.approx(single["train_loss"], abs=1e-5)


# --------------------------------------------------------------------------------------------
# Unlearning: NPO + KL needs reference log-probs and reference logits on every step.
# --------------------------------------------------------------------------------------------

UNLEARN = ["method.name=npo_kl", "method.precompute_reference=false"]
REFERENCES = {
    # reference = the model with its LoRA adapter switched off (no second copy)
    "adapter_off": (["lora.enabled=true"], "adapter_model.safetensors"),
    # full fine-tuning: reference = a frozen copy (under ZeRO-3 loaded with from_pretrained, partitioned)
    "frozen_copy": (["lora.enabled=false"], "model.safetensors"),
}
UNLEARN_CASES = [("ddp", "adapter_off"), ("zero2", "adapter_off"), ("zero3", "adapter_off"), ("zero3", "frozen_copy")]


@pytest.fixture(scope="module")
def unlearn_config(workdir, tiny_model_dir):
    root, _ = workdir
    retain = root / "retain.jsonl"
    retain.write_text(
        "".join(
            json.dumps({"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."}) + "\n" for i in range(8)
        )
    )
    config = root / "unlearn.yaml"
    config.write_text(
        f"model:\n  name_or_path: {tiny_model_dir}\ndata:\n  forget: {root / 'rows.jsonl'}\n  retain: {retain}\n"
    )
    return config


@pytest.fixture(scope="module")
def unlearn_single(workdir, unlearn_config):
    """Single-process reference runs, one per reference kind, built on first use."""
    from llm_unlearn.config import UnlearnRecipe, load_recipe
    from llm_unlearn.unlearn import run_unlearn

    root, _ = workdir
    done: dict[str, Path] = {}

    def get(reference: str) -> Path:
        if reference not in done:
            overrides = COMMON + UNLEARN + REFERENCES[reference][0]
            overrides += [f"output_dir={root / f'ul-single-{reference}'}", "training.per_device_train_batch_size=4"]
            done[reference] = run_unlearn(load_recipe(UnlearnRecipe, unlearn_config, overrides))
        return done[reference]

    return get


@pytest.mark.parametrize(("launch", "reference"), UNLEARN_CASES, ids=[f"{a}-{b}" for a, b in UNLEARN_CASES])
def test_unlearn_two_processes_match_one(launch, reference, workdir, unlearn_config, unlearn_single):
    root, _ = workdir
    single = unlearn_single(reference)
    out = root / f"ul-{launch}-{reference}"
    overrides = COMMON + UNLEARN + REFERENCES[reference][0]
    overrides += [f"output_dir={out}", "training.per_device_train_batch_size=2"]
    _launch("unlearn", launch, unlearn_config, root / f"audit-ul-{launch}-{reference}", overrides)
    _check_ranks(root / f"audit-ul-{launch}-{reference}", out, "unlearn_manifest.json")
    _assert_same_weights(out, single, REFERENCES[reference][1])
    _assert_moved(out, REFERENCES[reference][1])
    single_manifest = json.loads((single / "unlearn_manifest.json").read_text())
    multi_manifest = json.loads((out / "unlearn_manifest.json").read_text())
    assert multi_manifest["global_step"] == single_manifest["global_step"] == 3
    assert multi_manifest["train_loss"] == pytest.approx(single_manifest["train_loss"], abs=1e-5)


# --------------------------------------------------------------------------------------------
# End to end through the CLI (one process): finetune -> unlearn -> eval -> merge -> push --dry-run
# --------------------------------------------------------------------------------------------


def test_end_to_end_cli_finetune_unlearn_eval_merge_push_dry_run(tiny_model_dir, tmp_path, monkeypatch):
    """The shipped configs through the real CLI on the tiny model: every step's output feeds the next."""
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llm_unlearn.cli import main

    monkeypatch.delenv("HF_TOKEN", raising=False)  # a dry run needs no token

    configs = REPO / "configs"
    monkeypatch.chdir(tmp_path)
    tiny, short = f"model.name_or_path={tiny_model_dir}", ["training.max_steps=2", "lora.r=4", "data.max_length=96"]
    assert main(["finetune", str(configs / "finetune/synth_target_lora.yaml"), tiny, "output_dir=ft", *short]) == 0
    unlearn = ["unlearn", str(configs / "unlearn/npo_rt.yaml"), tiny, "model.adapter=ft", "output_dir=ul", *short]
    assert main(unlearn) == 0
    evaluate = ["eval", str(configs / "eval/synth.yaml"), tiny, "model.adapter=ul", "output_dir=ul-eval"]
    assert main([*evaluate, "subset=4", "generate=false", "data.max_length=96"]) == 0
    assert (
        main(["merge", "--base", str(tiny_model_dir), "--adapter", "ul", "--out", "merged", "--eval", "ul-eval"]) == 0
    )
    assert main(["push", "merged", "--repo-id", "me/tiny-npo", "--dry-run", "dry"]) == 0

    staged = {str(p.relative_to(tmp_path / "dry")) for p in (tmp_path / "dry").rglob("*") if p.is_file()}
    assert {"model.safetensors", "unlearn_manifest.json", "merge_manifest.json", "eval/summary.json"} <= staged
    assert {"README.md", "recipe.yaml", "tokenizer.json", "generation_config.json"} <= staged
    card = ModelCard.load(tmp_path / "dry" / "README.md")
    assert {"unlearning", "npo_rt"} <= set(card.data.tags) and card.data.library_name == "transformers"
    summary = json.loads((tmp_path / "ul-eval" / "summary.json").read_text())["summary"]
    assert f"| forget/truth_ratio_score | {summary['forget/truth_ratio_score']:.4g} |" in card.text

    # The pushed weights are the unlearned model: base + fine-tuned LoRA + unlearning LoRA.
    ids = torch.randint(3, 5000, (1, 10), generator=torch.Generator().manual_seed(0))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    stacked = PeftModel.from_pretrained(PeftModel.from_pretrained(base, "ft").merge_and_unload(), "ul").eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "dry", dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, stacked(ids).logits, atol=1e-5, rtol=0)
