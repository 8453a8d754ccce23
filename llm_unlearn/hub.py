"""Ship a result folder to the Hugging Face Hub: a model card (README.md with hub metadata) and the upload.

`push_folder` stages exactly what is uploaded (weights, tokenizer, manifests, eval outputs, the card, the
recipe) in one folder; `--dry-run OUT` writes that same folder to OUT instead of uploading it. The token comes
from `HF_TOKEN` or the stored `hf auth login`; it is passed to `huggingface_hub` and never printed, logged or
written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from llm_unlearn.errors import UnlearnError

MANIFESTS = ("unlearn_manifest.json", "finetune_manifest.json")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
# Never uploaded: trainer checkpoints and pickled training state (the hub flags pickles), an old card.
EXCLUDED = (
    "checkpoint-*",
    "runs",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "README.md",
    ".*",  # markers and caches (e.g. the demo's .demo_phase.json)
)
HUB_BASE_MODELS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
BASE_LICENSES = {"smollm2-135m": "apache-2.0", "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0"}
TOFU_DATASET = "locuslab/TOFU"

__all__ = [
    "EXCLUDED",
    "HubError",
    "add_push_parser",
    "card_metadata",
    "copy_eval_outputs",
    "find_eval_summary",
    "push_folder",
    "read_manifest",
    "stage_folder",
    "write_model_card",
]


class HubError(UnlearnError, RuntimeError):
    """A push cannot proceed: no token, no weights in the folder, or an invalid repository id."""


# --------------------------------------------------------------------------------------------
# Reading a result folder
# --------------------------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The run manifest of a result folder: `unlearn_manifest.json`, else `finetune_manifest.json`, else `{}`.

    A merged folder (with `merge_manifest.json`) gets it under the key "merge".
    """
    folder = Path(folder)
    manifest: dict[str, Any] = {}
    for name in MANIFESTS:
        path = folder / name
        if path.is_file():
            manifest = _read_json(path)
            break
    merge = folder / "merge_manifest.json"
    if merge.is_file():
        manifest = {**manifest, "merge": _read_json(merge)}
    return manifest


def find_eval_summary(folder: str | Path) -> dict[str, Any] | None:
    """`summary.json` of an eval run in the folder (also as `eval_summary.json`) or one level down (`eval/`)."""
    folder = Path(folder)
    candidates = [folder / "summary.json", folder / "eval_summary.json", *sorted(folder.glob("*/summary.json"))]
    for path in candidates:
        if path.is_file():
            return _read_json(path)
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HubError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HubError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def copy_eval_outputs(eval_dir: str | Path, dest: str | Path) -> list[str]:
    """Copy an `llm-unlearn eval` output folder's summary, report and plots into `dest/eval/`.

    Returns:
        The copied paths relative to `dest`.

    Raises:
        HubError: when `eval_dir` has no `summary.json`.
    """
    source, dest = Path(eval_dir), Path(dest)
    if not (source / "summary.json").is_file():
        raise HubError(f"{eval_dir}: no summary.json; is this the output_dir of an `llm-unlearn eval` run?")
    (dest / "eval").mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(source.iterdir()):
        if path.is_file() and (path.name in ("summary.json", "report.md") or path.suffix == ".png"):
            shutil.copy2(path, dest / "eval" / path.name)
            copied.append(f"eval/{path.name}")
    return copied


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------


def _method_name(manifest: dict[str, Any]) -> str:
    method = manifest.get("method")
    if isinstance(method, dict) and method.get("name"):
        return str(method["name"])
    if isinstance(method, str):
        return method
    return "sft" if manifest.get("kind") == "finetune" else "unknown"


def _data_section(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    value = manifest.get(key)
    return value if isinstance(value, dict) else {}


def card_metadata(manifest: dict[str, Any], license: str | None = None) -> Any:
    """Hub YAML metadata (`huggingface_hub.ModelCardData`) for a result described by `manifest`.

    `base_model` is set only for hub ids (the hub rejects local paths); the built-in 'smollm2-135m' maps to
    its hub id. `datasets` names TOFU when a data spec starts with `tofu:`.
    """
    from huggingface_hub import ModelCardData

    base = str(manifest.get("base_model") or "")
    hub_base = HUB_BASE_MODELS.get(base) or (base if _looks_like_hub_id(base) else None)
    specs = [_data_section(manifest, k).get("spec") for k in ("forget", "retain", "train")]
    datasets = [TOFU_DATASET] if any(str(s).startswith("tofu:") for s in specs if s) else None
    adapter = bool(manifest.get("adapter")) and "merge" not in manifest
    method = _method_name(manifest)
    tags = ["llm-unlearn", "unlearning", method] + (["peft", "lora"] if adapter else [])
    return ModelCardData(
        base_model=hub_base,
        library_name="peft" if adapter else "transformers",
        license=license or BASE_LICENSES.get(base) or "other",
        tags=list(dict.fromkeys(tags)),
        datasets=datasets,
        pipeline_tag="text-generation",
    )


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) and not Path(spec).exists()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return "`" + json.dumps(value, sort_keys=True) + "`"
    return "—" if value is None or value == "" else str(value).replace("|", "\\|")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        elif isinstance(value, int | float | str | bool) or value is None:
            flat[name] = value
    return flat


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in rows]
    return "\n".join(lines)


def _body(manifest: dict[str, Any], eval_summary: dict[str, Any] | None, repo_id: str | None) -> str:
    method = _method_name(manifest)
    base = manifest.get("base_model") or "an unrecorded base model"
    merged = "merge" in manifest
    adapter = bool(manifest.get("adapter")) and not merged
    title = repo_id.split("/")[-1] if repo_id else "llm-unlearn model"
    kind = "fine-tuned" if manifest.get("kind") == "finetune" else f"unlearned with **{method}**"
    form = (
        "a LoRA adapter: load it with peft on top of the base model"
        if adapter
        else "full weights (LoRA merged in)"
        if merged
        else "full weights"
    )
    parts = [
        f"# {title}",
        f"`{base}` {kind} with llm-unlearn; this repository holds {form}.",
    ]
    if adapter and manifest.get("input_adapter"):
        parts.append(
            f"**Note:** this adapter was trained on top of `{manifest['input_adapter']}` merged into the base; on "
            "the bare base model it is not the unlearned model. Prefer pushing the merged model "
            "(`llm-unlearn merge`), which is standalone."
        )
    if manifest.get("kind") != "finetune":
        parts.append(
            "Machine unlearning makes the model forget a chosen forget set while keeping its other knowledge; "
            "see the evaluation below for how well it forgot and what it kept (TOFU metrics, Maini et al. 2024, "
            "https://arxiv.org/abs/2401.06121)."
        )

    method_info = manifest.get("method") if isinstance(manifest.get("method"), dict) else {}
    rows: list[tuple[str, Any]] = [("method", method)]
    if method_info.get("formula"):
        rows.append(("formula", f"`{method_info['formula']}`"))
    hyper = method_info.get("hyperparameters") or {}
    if isinstance(hyper, dict):
        rows += [(f"hyperparameter `{k}`", v) for k, v in sorted(hyper.items()) if v is not None]
    recipe = manifest.get("recipe") if isinstance(manifest.get("recipe"), dict) else {}
    training = recipe.get("training") or {}
    rows += [(f"training `{k}`", v) for k, v in sorted(training.items())] if isinstance(training, dict) else []
    if isinstance(recipe.get("lora"), dict) and recipe["lora"].get("enabled"):
        rows.append(("LoRA", {k: recipe["lora"].get(k) for k in ("r", "alpha", "dropout")}))
    rows.append(("seed", manifest.get("seed")))
    parts += ["## Method", _table(rows, ("setting", "value"))]

    data_rows: list[tuple[str, Any]] = []
    for key, label in (("forget", "forget set"), ("retain", "retain set"), ("train", "training set")):
        section = _data_section(manifest, key)
        if section:
            data_rows += [
                (f"{label} spec", section.get("spec")),
                (f"{label} size", section.get("size")),
                (
                    f"{label} fingerprint (sha256)",
                    f"`{section['fingerprint']}`" if section.get("fingerprint") else None,
                ),
            ]
    if manifest.get("input_adapter"):
        data_rows.append(("started from adapter (merged into the base first)", manifest["input_adapter"]))
    if manifest.get("base_weights_sha256"):
        data_rows.append(("base weights sha256", manifest["base_weights_sha256"]))
    if data_rows:
        parts += ["## Data", _table(data_rows, ("item", "value"))]

    parts.append("## Evaluation")
    summary = (eval_summary or {}).get("summary", eval_summary) if eval_summary else None
    if isinstance(summary, dict) and summary:
        parts.append(_table(sorted(_flatten(summary).items()), ("metric", "value")))
    else:
        parts.append("No evaluation summary was found in the folder (run `llm-unlearn eval`).")

    command = "finetune" if manifest.get("kind") == "finetune" else "unlearn"
    repro = ["## Reproduce"]
    if recipe:
        repro.append(
            f"The resolved recipe is `recipe.yaml` in this repository:\n\n```bash\nllm-unlearn {command} recipe.yaml\n```"
        )
    else:
        repro.append(f"```bash\nllm-unlearn {command} CONFIG\n```\n(the recipe was not recorded in the manifest)")
    versions = manifest.get("versions")
    if isinstance(versions, dict) and versions:
        repro.append("Library versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".")
    if manifest.get("wall_time_s") is not None:
        repro.append(f"Wall time: {manifest['wall_time_s']} s.")
    parts.append("\n\n".join(repro))

    load = f'"{repo_id}"' if repo_id else '"THIS_FOLDER"'
    if adapter:
        usage = (
            f"from peft import AutoPeftModelForCausalLM\n\nmodel = AutoPeftModelForCausalLM.from_pretrained({load})"
        )
    else:
        usage = (
            f"from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained({load})"
        )
    parts += ["## Usage", f"```python\n{usage}\n```"]
    return "\n\n".join(parts) + "\n"


def write_model_card(
    folder: str | Path,
    manifest: dict[str, Any],
    eval_summary: dict[str, Any] | None = None,
    repo_id: str | None = None,
    license: str | None = None,
) -> Path:
    """Write `folder/README.md`: hub YAML metadata + method, hyperparameters, data fingerprints, eval table.

    Missing manifest keys are tolerated (shown as "—" or left out).

    Args:
        folder: where README.md is written.
        manifest: `unlearn_manifest.json` / `finetune_manifest.json` content (see `read_manifest`).
        eval_summary: `summary.json` of an eval run (`{"summary": {...}, "meta": {...}}` or a flat dict).
        repo_id: the target repository, used in the title and the usage snippet.
        license: hub license id; default from the base model, else "other".

    Returns:
        The README.md path.
    """
    from huggingface_hub import ModelCard

    data = card_metadata(manifest, license)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(manifest, eval_summary, repo_id)}")
    path = Path(folder) / "README.md"
    card.save(path)
    return path


# --------------------------------------------------------------------------------------------
# Staging and upload
# --------------------------------------------------------------------------------------------


def stage_folder(
    folder: str | Path,
    target: str | Path,
    repo_id: str | None = None,
    license: str | None = None,
    eval_dir: str | Path | None = None,
) -> list[str]:
    """Copy what would be uploaded from `folder` into the existing empty folder `target`, and write the card.

    Copies everything except `EXCLUDED` (trainer checkpoints, pickled training state, an old README.md),
    the eval outputs of `eval_dir` into `eval/` when given, writes `recipe.yaml` when the manifest recorded
    the recipe, and the model card (its evaluation table from `eval/summary.json` or `folder/summary.json`).

    Returns:
        The relative paths of the staged files, sorted.

    Raises:
        HubError: when `folder` holds no model weights.
    """
    source, target = Path(folder), Path(target)
    if not source.is_dir():
        raise HubError(f"{folder}: not a folder")
    if not any((source / name).is_file() for name in WEIGHT_FILES):
        raise HubError(f"{folder}: no model weights ({', '.join(WEIGHT_FILES[:2])}); nothing to push")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*EXCLUDED), dirs_exist_ok=True)
    if eval_dir is not None:
        copy_eval_outputs(eval_dir, target)
    manifest = read_manifest(source)
    _point_adapter_at_hub_base(target / "adapter_config.json", card_metadata(manifest).base_model)
    if isinstance(manifest.get("recipe"), dict):
        (target / "recipe.yaml").write_text(yaml.safe_dump(manifest["recipe"], sort_keys=False))
    write_model_card(target, manifest, find_eval_summary(target), repo_id, license)
    return sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())


def _point_adapter_at_hub_base(adapter_config: Path, hub_base: str | None) -> None:
    """In the staged copy, name the base model by its hub id (not a local path) so the hub copy loads."""
    if not hub_base or not adapter_config.is_file():
        return
    config = json.loads(adapter_config.read_text())
    if config.get("base_model_name_or_path") != hub_base:
        config["base_model_name_or_path"] = hub_base
        adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _token() -> str:
    """`HF_TOKEN`, else the token stored by `hf auth login`. The value is never printed."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubError(
            "no Hugging Face token: set the HF_TOKEN environment variable or run `hf auth login` "
            "(a --dry-run needs no token)"
        )
    return token


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HubError(f"--repo-id {repo_id!r}: {exc}") from None


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    dry_run_dir: str | Path | None = None,
    api: Any = None,
    license: str | None = None,
    eval_dir: str | Path | None = None,
) -> str:
    """Upload a result folder (adapter, merged model or finetune output) with its model card.

    Steps: 1. stage the files + card (`stage_folder`); 2. with `dry_run_dir`, the staged folder *is* the
    result: nothing is uploaded and no token is needed; 3. otherwise `create_repo` (exist_ok), `create_branch`
    when `revision` is given, and one `upload_folder` commit whose message names the method.

    Args:
        folder: the result folder.
        repo_id: "ORG/NAME" (or "NAME" under the token's user).
        private: create the repository as private.
        revision: branch to push to (created if missing); None pushes to main.
        dry_run_dir: write the staged folder here (must be new or empty) instead of uploading.
        api: a `huggingface_hub.HfApi`-like object (tests pass a fake); None builds one.
        license: hub license id for the card.
        eval_dir: an `llm-unlearn eval` output folder whose summary, report and plots are uploaded under
            `eval/` and fill the card's evaluation table.

    Returns:
        The dry-run folder path, or the commit URL.
    """
    from llm_unlearn.outputs import prepare_output_dir

    _check_repo_id(repo_id)
    if dry_run_dir is not None:
        target = prepare_output_dir(dry_run_dir, overwrite=False, protected=[folder])
        stage_folder(folder, target, repo_id, license, eval_dir)
        return str(target)
    token = _token()
    method = _method_name(read_manifest(folder))
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="llm-unlearn-push-") as staging:
        stage_folder(folder, staging, repo_id, license, eval_dir)
        api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, token=token, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            repo_type="model",
            revision=revision,
            token=token,
            commit_message=f"llm-unlearn: upload {method} model",
        )
    return str(getattr(info, "commit_url", info))


def _cmd_push(args: argparse.Namespace) -> int:
    result = push_folder(
        args.folder,
        args.repo_id,
        args.private,
        args.revision,
        dry_run_dir=args.dry_run,
        license=args.license,
        eval_dir=args.eval,
    )
    if args.dry_run:
        files = sorted(str(p.relative_to(result)) for p in Path(result).rglob("*") if p.is_file())
        print(f"dry run: {len(files)} file(s) that would be uploaded to {args.repo_id} are in {result}:")
        for name in files:
            print(f"  {name}")
    else:
        print(result)
    return 0


def add_push_parser(subparsers: argparse._SubParsersAction) -> None:
    """`llm-unlearn push DIR --repo-id ORG/NAME [--private] [--revision R] [--dry-run OUT] [--eval DIR] [--license ID]`."""
    parser = subparsers.add_parser(
        "push",
        help="Upload a result folder with a generated model card to the Hugging Face Hub.",
        description="Token from HF_TOKEN or `hf auth login`. --dry-run OUT writes exactly the folder and card "
        "that would be uploaded.",
    )
    parser.add_argument("folder", help="Result folder: adapter, merged model or finetune output.")
    parser.add_argument("--repo-id", required=True, help="Target repository, ORG/NAME.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", help="Branch to push to (created if missing).")
    parser.add_argument("--dry-run", metavar="OUT", help="Write the staged folder to OUT instead of uploading.")
    parser.add_argument("--eval", metavar="DIR", help="`llm-unlearn eval` output folder to include (summary, report).")
    parser.add_argument("--license", help="Hub license id for the card (default: from the base model, else other).")
    parser.set_defaults(func=_cmd_push)
