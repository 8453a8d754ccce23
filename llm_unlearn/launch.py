"""Entry-point plumbing shared by `recipes/*.py` and the CLI: `--config` + overrides -> recipe -> run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from llm_unlearn.config import load_recipe
from llm_unlearn.errors import UnlearnError


def _load(recipe_cls: type, config: str | None, overrides: list[str], overwrite: bool) -> Any:
    return load_recipe(recipe_cls, config, list(overrides) + (["overwrite=true"] if overwrite else []))


def run_recipe_main(
    name: str, recipe_cls: type, run: Callable[[Any], Any], argv: list[str] | None, description: str
) -> int:
    """`main()` of a recipe script: `python recipes/NAME.py --config FILE [--overwrite] [key=value ...]`.

    Prints what `run` returns (the output folder or the summary); user errors become one line on stderr, exit 2.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help=f"{name} recipe YAML (configs/{name}/*.yaml).")
    parser.add_argument("--overwrite", action="store_true", help="Allow a non-empty output_dir.")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides.")
    args = parser.parse_args(argv)
    try:
        result = run(_load(recipe_cls, args.config, args.overrides, args.overwrite))
    except UnlearnError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    if result:
        print(result)
    return 0


def add_recipe_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    recipe_cls: type,
    run: Callable[[Any], Any],
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """`llm-unlearn NAME CONFIG [key=value ...] [--overwrite]`; returns the subparser for extra flags."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.add_argument("config", help=f"Recipe YAML (configs/{name}/*.yaml).")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. training.learning_rate=1e-4.")
    parser.add_argument("--overwrite", action="store_true", help="Allow a non-empty output_dir.")

    def command(args: argparse.Namespace) -> int:
        result = run(_load(recipe_cls, args.config, args.overrides, args.overwrite))
        if result:
            print(result)
        return 0

    parser.set_defaults(func=command)
    return parser
