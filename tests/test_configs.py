"""Every shipped config parses: recipes through load_recipe, accelerate YAML as `accelerate launch` reads it,
DeepSpeed JSON with every `auto` value filled by the Trainer. So no config rots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
RECIPE_CLASSES = {
    "unlearn": ("llm_unlearn.config", "UnlearnRecipe"),
    "finetune": ("llm_unlearn.config", "FinetuneRecipe"),
    "eval": ("llm_unlearn.eval.runner", "EvalRecipe"),
}
KNOWN_FOLDERS = {*RECIPE_CLASSES, "accelerate", "deepspeed"}


def _files(folder: str, pattern: str) -> list[Path]:
    return sorted((CONFIGS / folder).glob(pattern))


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(CONFIGS)) for p in paths]


RECIPES = [p for kind in RECIPE_CLASSES for p in _files(kind, "*.yaml")]
ACCELERATE = _files("accelerate", "*.yaml")
DEEPSPEED = _files("deepspeed", "*.json")


def test_every_config_file_is_covered():
    """Nothing under configs/ escapes these tests (a new folder or extension needs a test here)."""
    covered = set(RECIPES) | set(ACCELERATE) | set(DEEPSPEED)
    stray = [p for p in CONFIGS.rglob("*") if p.is_file() and p not in covered]
    assert stray == []
    assert {p.name for p in CONFIGS.iterdir() if p.is_dir()} <= KNOWN_FOLDERS
    assert len(ACCELERATE) >= 7 and len(DEEPSPEED) >= 3 and _files("finetune", "*.yaml")


@pytest.mark.parametrize("path", RECIPES, ids=_ids(RECIPES))
def test_recipe_parses_with_its_class(path):
    import importlib

    from llm_unlearn.config import load_recipe

    module, name = RECIPE_CLASSES[path.parent.name]
    recipe = load_recipe(getattr(importlib.import_module(module), name), path)
    assert recipe.output_dir
    first = path.read_text().splitlines()[0]
    assert first.startswith("# "), f"{path}: first line must say what it runs"
    assert "llm-unlearn" in path.read_text() or "recipes/" in path.read_text(), f"{path}: show the command"


def _launch_args(path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "recipes/finetune.py", "--config", "x"])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


@pytest.mark.parametrize("path", ACCELERATE, ids=_ids(ACCELERATE))
def test_accelerate_config_resolves_like_accelerate_launch(path, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    text = path.read_text()
    assert text.startswith("# ") and "accelerate launch --config_file configs/accelerate/" in text
    ClusterConfig.from_yaml_file(path)  # unknown keys raise
    monkeypatch.chdir(REPO)  # DeepSpeed JSON paths are relative to the repository root
    args, defaults = _launch_args(path)
    kind = defaults.distributed_type
    if kind == DistributedType.NO:
        assert args.num_processes == 1
    elif kind == DistributedType.MULTI_GPU:
        assert args.multi_gpu and args.num_processes >= 2
        env = prepare_multi_gpu_env(args)
        assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # precision comes from the recipe
    elif kind == DistributedType.DEEPSPEED:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        ds_file = Path(env["ACCELERATE_DEEPSPEED_CONFIG_FILE"])
        assert ds_file.is_file() and ds_file.parent == Path("configs/deepspeed")
        stage = json.loads(ds_file.read_text())["zero_optimization"]["stage"]
        assert stage == (2 if "zero2" in path.name else 3)
        assert (env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true") == (stage == 3)
        from accelerate.utils import DeepSpeedPlugin

        with mock.patch.dict(os.environ, env):
            plugin = DeepSpeedPlugin()
        assert plugin.zero_stage == stage
        offload = plugin.deepspeed_config["zero_optimization"].get("offload_param", {}).get("device")
        assert (offload == "cpu") == ("offload" in path.name)
    elif kind == DistributedType.FSDP:
        from accelerate.utils import FullyShardedDataParallelPlugin

        env = prepare_multi_gpu_env(args)
        with mock.patch.dict(os.environ, env):
            plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    else:
        pytest.fail(f"{path}: unexpected distributed_type {kind}")


def test_accelerate_configs_cover_the_documented_setups():
    kinds = {p.stem: yaml.safe_load(p.read_text())["distributed_type"] for p in ACCELERATE}
    assert kinds["single"] == "NO" and kinds["ddp"] == kinds["cpu_ddp"] == "MULTI_GPU"
    assert kinds["zero2"] == kinds["zero3"] == kinds["zero3_offload"] == "DEEPSPEED" and kinds["fsdp"] == "FSDP"


def _autos(node, path=""):
    if isinstance(node, dict):
        return [a for k, v in node.items() for a in _autos(v, f"{path}.{k}")]
    return [path] if node == "auto" else []


@pytest.mark.parametrize("path", DEEPSPEED, ids=_ids(DEEPSPEED))
def test_deepspeed_json_autos_are_filled_by_the_trainer(path, tmp_path, tiny_model):
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    raw = json.loads(path.read_text())
    assert {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"} <= set(raw)
    assert raw["train_micro_batch_size_per_gpu"] == "auto" and raw["gradient_clipping"] == "auto"
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        max_grad_norm=0.5,
        learning_rate=2e-4,
        report_to="none",
        use_cpu=True,
    )
    config = HfTrainerDeepSpeedConfig(str(path))
    config.trainer_config_process(args)
    config.trainer_config_finalize(args, tiny_model, num_training_steps=10)
    filled = config.config
    assert _autos(filled) == []
    assert filled["train_micro_batch_size_per_gpu"] == 3 and filled["gradient_accumulation_steps"] == 2
    assert filled["train_batch_size"] == 6 and filled["gradient_clipping"] == 0.5
    if "optimizer" in filled:
        assert filled["optimizer"]["params"]["lr"] == 2e-4
