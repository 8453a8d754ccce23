"""Tests for llm_unlearn.hub: the model card parses with huggingface_hub, uploads checked at the HfApi boundary."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest

from llm_unlearn.errors import OutputDirError
from llm_unlearn.hub import HubError, push_folder, stage_folder, write_model_card

SECRET = "hf_TESTtokenNEVERshown1234567890"

MANIFEST = {
    "kind": "unlearn",
    "base_model": "smollm2-135m",
    "base_weights_sha256": {"model.safetensors": "ab" * 32},
    "adapter": True,
    "method": {
        "name": "npo_rt",
        "formula": "NPO(forget) + alpha * NLL(retain)",
        "hyperparameters": {"beta": 0.1, "retain_weight": 1.0},
    },
    "forget": {"spec": "tofu:forget01", "size": 40, "fingerprint": "f" * 64},
    "retain": {"spec": "tofu:retain99", "size": 3960, "fingerprint": "e" * 64},
    "seed": 7,
    "recipe": {"output_dir": "outputs/x", "method": {"name": "npo_rt"}, "training": {"learning_rate": 1e-5}},
    "versions": {"torch": "2.13.0"},
}
SUMMARY = {"summary": {"forget_quality": 1.83e-21, "model_utility": 0.6227, "forget/rougeL": 0.41}, "meta": {}}


@pytest.fixture
def result_dir(tmp_path):
    """A result folder as `llm-unlearn unlearn` + `eval` leave it (weights are stand-in bytes)."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/local/smol"}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "unlearn_manifest.json").write_text(json.dumps(MANIFEST))
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "README.md").write_text("old peft card")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"state")
    (folder / "eval").mkdir()
    (folder / "eval" / "summary.json").write_text(json.dumps(SUMMARY))
    (folder / "eval" / "report.md").write_text("# report")
    (folder / ".demo_phase.json").write_text("{}")
    return folder


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


class FakeApi:
    """Records HfApi calls; `upload_folder` snapshots the files it was given."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        root = Path(kwargs["folder_path"])
        self.uploaded = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

        class Info:
            commit_url = f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"

        return Info()


def test_model_card_parses_and_records_the_run(tmp_path):
    from huggingface_hub import ModelCard

    path = write_model_card(tmp_path, MANIFEST, SUMMARY, repo_id="org/smol-forget01")
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data["library_name"] == "peft" and data["license"] == "apache-2.0"
    assert {"unlearning", "npo_rt", "llm-unlearn"} <= set(data["tags"])
    assert data["datasets"] == ["locuslab/TOFU"]
    text = card.text
    assert "f" * 64 in text and "| forget set size | 40 |" in text
    assert "| hyperparameter `beta` | 0.1 |" in text
    assert "| forget_quality | 1.83e-21 |" in text and "| model_utility | 0.6227 |" in text
    assert "llm-unlearn unlearn recipe.yaml" in text
    assert 'AutoPeftModelForCausalLM.from_pretrained("org/smol-forget01")' in text


def test_model_card_tolerates_a_sparse_manifest(tmp_path):
    from huggingface_hub import ModelCard

    card = ModelCard.load(write_model_card(tmp_path, {"base_model": str(tmp_path)}, None))
    data = card.data.to_dict()
    assert "base_model" not in data  # a local path is not a hub id
    assert data["library_name"] == "transformers" and data["license"] == "other"
    assert "unknown" in data["tags"] and "No evaluation summary" in card.text


def test_dry_run_writes_exactly_what_push_uploads(result_dir, tmp_path, monkeypatch, no_token):
    out = tmp_path / "dry"
    parser = argparse.ArgumentParser()
    from llm_unlearn.hub import add_push_parser

    add_push_parser(parser.add_subparsers())
    args = parser.parse_args(["push", str(result_dir), "--repo-id", "org/smol", "--dry-run", str(out)])
    assert args.func(args) == 0  # no token needed
    dry = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert set(dry) == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "eval/report.md",
        "eval/summary.json",
        "recipe.yaml",
        "tokenizer.json",
        "unlearn_manifest.json",
    }
    assert b"old peft card" not in dry["README.md"]
    staged_config = json.loads(dry["adapter_config.json"])  # a local base path would not load from the hub
    assert staged_config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert json.loads((result_dir / "adapter_config.json").read_text()) == {"base_model_name_or_path": "/local/smol"}

    monkeypatch.setenv("HF_TOKEN", SECRET)
    api = FakeApi()
    url = push_folder(result_dir, "org/smol", private=True, revision="v1", api=api)
    assert url == "https://huggingface.co/org/smol/commit/abc"
    assert api.uploaded == dry
    names = [name for name, _ in api.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    create, branch, upload = (kwargs for _, kwargs in api.calls)
    assert create["private"] is True and create["exist_ok"] is True and create["token"] == SECRET
    assert branch["branch"] == "v1" and upload["revision"] == "v1" and upload["repo_id"] == "org/smol"
    assert "npo_rt" in upload["commit_message"]
    with pytest.raises(OutputDirError):  # a dry run never overwrites
        push_folder(result_dir, "org/smol", dry_run_dir=out)


def test_push_without_token_is_a_clear_error(result_dir, no_token):
    api = FakeApi()
    with pytest.raises(HubError, match="HF_TOKEN"):
        push_folder(result_dir, "org/smol", api=api)
    assert api.calls == []


def test_token_is_never_printed_logged_or_written(result_dir, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    api = FakeApi()
    with caplog.at_level(logging.DEBUG):
        push_folder(result_dir, "org/smol", api=api)
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text
    assert all(SECRET.encode() not in content for content in api.uploaded.values())
    assert all(SECRET.encode() not in p.read_bytes() for p in result_dir.rglob("*") if p.is_file())


def test_push_refuses_folders_without_weights_and_bad_repo_ids(tmp_path, result_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HubError, match="no model weights"):
        push_folder(empty, "org/smol", api=FakeApi())
    with pytest.raises(HubError, match="repo-id"):
        push_folder(result_dir, "org/bad name!", api=FakeApi())


def test_merged_folder_card_says_full_weights(tmp_path):
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "unlearn_manifest.json").write_text(json.dumps(MANIFEST))
    (folder / "merge_manifest.json").write_text(json.dumps({"kind": "merge", "dtype": "float32"}))
    target = tmp_path / "stage"
    target.mkdir()
    stage_folder(folder, target, "org/merged")
    text = (target / "README.md").read_text()
    assert "library_name: transformers" in text and "LoRA merged in" in text
    assert "AutoModelForCausalLM" in text


def test_eval_summary_is_found_under_its_usual_names(tmp_path):
    from llm_unlearn.hub import find_eval_summary

    assert find_eval_summary(tmp_path) is None
    (tmp_path / "eval_summary.json").write_text(json.dumps(SUMMARY))
    assert find_eval_summary(tmp_path) == SUMMARY


def test_card_warns_when_the_adapter_sits_on_a_finetuned_adapter(tmp_path):
    text = write_model_card(tmp_path, {**MANIFEST, "input_adapter": "outputs/finetune/target"}).read_text()
    assert "trained on top of `outputs/finetune/target`" in text and "llm-unlearn merge" in text
    plain = write_model_card(tmp_path, MANIFEST).read_text()
    assert "trained on top of" not in plain


def test_card_for_a_finetuned_target_model(tmp_path):
    from huggingface_hub import ModelCard

    manifest = {
        "kind": "finetune",
        "base_model": "smollm2-135m",
        "adapter": True,
        "train": {"spec": "tofu:full", "size": 4000, "fingerprint": "a" * 64},
        "recipe": {"training": {"num_train_epochs": 5}},
    }
    card = ModelCard.load(write_model_card(tmp_path, manifest, None, "org/smol-tofu-target"))
    assert {"sft", "unlearning"} <= set(card.data.tags) and card.data.datasets == ["locuslab/TOFU"]
    assert "fine-tuned with llm-unlearn" in card.text and "| training set size | 4000 |" in card.text
    assert "llm-unlearn finetune recipe.yaml" in card.text and "Machine unlearning makes" not in card.text
