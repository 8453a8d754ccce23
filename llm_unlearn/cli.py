"""The `llm-unlearn` command line: parses arguments and calls the library. No logic of its own."""

from __future__ import annotations

import argparse
import importlib
import sys

import yaml

from llm_unlearn import __version__
from llm_unlearn.errors import UnlearnError

# (module, function) pairs; each function adds one subcommand (or a group) to the parser.
SUBCOMMANDS = [
    ("llm_unlearn.cli", "add_config_parser"),
    ("llm_unlearn.cli", "add_model_parser"),
    ("llm_unlearn.data.commands", "add_data_parser"),
    ("llm_unlearn.unlearn", "add_methods_parser"),
    ("llm_unlearn.finetune", "add_finetune_parser"),
    ("llm_unlearn.unlearn", "add_unlearn_parser"),
    ("llm_unlearn.eval.runner", "add_eval_parser"),
    ("llm_unlearn.merge", "add_merge_parser"),
    ("llm_unlearn.hub", "add_push_parser"),
    ("llm_unlearn.demo", "add_demo_parser"),
]

RECIPE_CLASSES = {
    "unlearn": ("llm_unlearn.config", "UnlearnRecipe"),
    "finetune": ("llm_unlearn.config", "FinetuneRecipe"),
    "eval": ("llm_unlearn.eval.runner", "EvalRecipe"),
}


def _config_show(args: argparse.Namespace) -> int:
    from llm_unlearn.config import load_recipe, recipe_to_dict

    kind = args.kind or _guess_recipe_kind(args.file)
    module, name = RECIPE_CLASSES[kind]
    recipe_cls = getattr(importlib.import_module(module), name)
    recipe = load_recipe(recipe_cls, args.file, args.overrides)
    print(f"# {kind} recipe resolved from {args.file}")
    print(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False), end="")
    return 0


def _guess_recipe_kind(path: str) -> str:
    """Recipe kind from the config's folder (configs/unlearn/..., configs/finetune/..., configs/eval/...)."""
    for kind in RECIPE_CLASSES:
        if f"/{kind}/" in f"/{path}" or path.startswith(f"{kind}/"):
            return kind
    return "unlearn"


def add_config_parser(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="Inspect recipe configs.")
    sub = config.add_subparsers(dest="config_command", required=True)
    show = sub.add_parser("show", help="Print the fully resolved config (file + overrides + defaults).")
    show.add_argument("file", help="Recipe YAML file.")
    show.add_argument("overrides", nargs="*", help="section.key=value overrides.")
    show.add_argument("--kind", choices=sorted(RECIPE_CLASSES), help="Recipe kind (default: from the folder).")
    show.set_defaults(func=_config_show)


def _model_prepare(args: argparse.Namespace) -> int:
    from llm_unlearn.models import BUILTIN_SMOLLM2, prepare_smollm2

    if args.name != BUILTIN_SMOLLM2:
        raise UnlearnError(f"unknown built-in model '{args.name}'; available: {BUILTIN_SMOLLM2}")
    print(prepare_smollm2())
    return 0


def add_model_parser(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="Manage the embedded model cache.")
    sub = model.add_subparsers(dest="model_command", required=True)
    prepare = sub.add_parser("prepare", help="Convert the embedded GGUF model to a cached safetensors folder.")
    prepare.add_argument("name", help="Built-in model name, e.g. smollm2-135m.")
    prepare.set_defaults(func=_model_prepare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-unlearn",
        description="Make a fine-tuned language model forget chosen data, and prove it with TOFU-style probes.",
    )
    parser.add_argument("--version", action="version", version=f"llm-unlearn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, function in SUBCOMMANDS:
        getattr(importlib.import_module(module), function)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come after flags (`eval CONFIG --overwrite a.b=1`): argparse leaves them over.
    overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    if extra != overrides or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = list(args.overrides or []) + overrides
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UnlearnError as exc:
        print(f"llm-unlearn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
