"""run_unlearn end to end on the tiny model, output-folder refusals, the CLI hooks and the shipped unlearn configs."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from llm_unlearn.config import UnlearnRecipe, load_recipe
from llm_unlearn.errors import OutputDirError
from llm_unlearn.methods import get_method, list_methods
from llm_unlearn.unlearn import MANIFEST_NAME, add_methods_parser, add_unlearn_parser, run_unlearn

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "unlearn").glob("*.yaml"))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm-unlearn")
    sub = p.add_subparsers(dest="command")
    add_unlearn_parser(sub)
    add_methods_parser(sub)
    return p


def tiny_overrides(model_dir: Path, out: Path) -> list[str]:
    return [
        f"model.name_or_path={model_dir}",
        "model.dtype=float32",
        f"output_dir={out}",
        "lora.r=4",
        "data.max_length=64",
        "training.max_steps=2",
        "training.logging_steps=1",
        "training.disable_tqdm=true",
        "training.use_cpu=true",
    ]


def test_unlearn_cli_end_to_end_writes_adapter_and_manifest(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    config = REPO / "configs" / "unlearn" / "idk_dpo.yaml"
    args = parser().parse_args(["unlearn", str(config), *tiny_overrides(tiny_model_dir, out)])
    before = {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()}
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()} == before  # base folder untouched

    manifest = json.loads((out / MANIFEST_NAME).read_text())
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    assert manifest["base_model"] == str(tiny_model_dir)
    assert manifest["base_weights_sha256"] == {"model.safetensors": hashlib.sha256(weights).hexdigest()}
    assert manifest["method"]["name"] == "idk_dpo"
    assert manifest["method"]["hyperparameters"]["beta"] == 0.1
    assert manifest["forget"]["spec"] == "synth:forget" and manifest["forget"]["size"] > 0
    assert len(manifest["forget"]["fingerprint"]) == 64 and len(manifest["retain"]["fingerprint"]) == 64
    assert manifest["seed"] == 42 and manifest["global_step"] == 2 and manifest["wall_time_s"] > 0
    assert {"torch", "transformers", "peft"} <= set(manifest["versions"])
    for key in ("forget/loss", "forget/nll", "retain/nll", "forget_idk/nll", "ref/logratio"):
        assert key in manifest["last_metrics"]

    # a second run into the same, now non-empty, folder is refused before any model is loaded
    with pytest.raises(OutputDirError, match="not empty"):
        run_unlearn(load_recipe(UnlearnRecipe, config, tiny_overrides(tiny_model_dir, out)))


def test_refuses_to_write_into_the_base_model_folder(tiny_model_dir):
    recipe = load_recipe(UnlearnRecipe, None, tiny_overrides(tiny_model_dir, tiny_model_dir / "unlearned"))
    with pytest.raises(OutputDirError, match="input model folder"):
        run_unlearn(recipe)
    assert not (tiny_model_dir / "unlearned").exists()


def test_methods_command_prints_every_method(capsys):
    args = parser().parse_args(["methods"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    for name in list_methods():
        assert f"\n{name}\n" in f"\n{text}"
        assert get_method(name).formula in text
    assert "beta=2.5, simnpo_gamma=0" in text


def test_unlearn_parser_collects_overrides_and_overwrite():
    args = parser().parse_args(["unlearn", "c.yaml", "method.beta=0.2", "seed=1", "--overwrite"])
    assert (args.config, args.overrides, args.overwrite) == ("c.yaml", ["method.beta=0.2", "seed=1"], True)


def test_recipe_script_reports_config_errors(tmp_path, capsys):
    import runpy

    recipe = runpy.run_path(str(REPO / "recipes" / "unlearn.py"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("method:\n  nmae: npo\n")
    assert recipe["main"](["--config", str(bad)]) == 2
    assert "did you mean 'name'" in capsys.readouterr().err


def test_every_preset_has_a_lora_config_that_parses():
    names = {path.stem for path in CONFIGS}
    assert set(list_methods()) <= names
    for path in CONFIGS:
        text = path.read_text()
        assert text.startswith("# ") and f"llm-unlearn unlearn configs/unlearn/{path.name}" in text, path
        recipe = load_recipe(UnlearnRecipe, path)
        method = get_method(recipe.method.name)
        assert recipe.lora.enabled, path
        assert (recipe.data.retain is not None) == method.needs_retain, path
        assert "learning_rate" in yaml.safe_load(text)["training"], path
