"""The `llm-unlearn data ...` subcommands (validate, synth): argparse wiring plus a thin run function each.

Holds no data logic; cli.py calls `add_data_parser(subparsers)` and then `args.func(args)`.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from llm_unlearn.config import DataConfig
from llm_unlearn.data.requests import ValidationReport, validate_forget_retain
from llm_unlearn.errors import ConfigError, UnlearnError


def add_data_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `data validate` and `data synth` to the CLI's subparsers; each sets `func=` returning an exit code."""
    parser = subparsers.add_parser("data", help="Check forget/retain files; generate synthetic authors.")
    commands = parser.add_subparsers(dest="data_command", metavar="{validate,synth}", required=True)

    validate = commands.add_parser(
        "validate",
        help="Check a forget set (and retain set): rows, tokens, duplicates, overlaps; exit 1 on an error.",
        description="FILE and --retain take a path (JSONL, JSON, CSV, Parquet, save_to_disk folder), "
        "tofu:SPLIT or synth:PART.",
    )
    validate.add_argument("file", help="The forget set.")
    validate.add_argument("--retain", default=None, help="The retain set (optional).")
    validate.add_argument("--question-key", default="question", help="Column holding the question.")
    validate.add_argument("--answer-key", default="answer", help="Column holding the answer.")
    validate.add_argument("--text-key", default=None, help="Column holding raw text passages (text unlearning).")
    validate.add_argument("--tofu-dir", default=None, help="Local TOFU folder for tofu:... specs.")
    validate.add_argument(
        "--tokenizer", default=None, help="Tokenizer spec (folder, hub id, smollm2-135m) to count tokens."
    )
    validate.add_argument("--max-length", type=int, default=256, help="Max tokens per example (prompt + answer).")
    validate.add_argument(
        "--truncation", choices=("warn", "error"), default="warn", help="Over-long rows: count them, or fail."
    )
    validate.add_argument(
        "--plot", default=None, metavar="PNG", help="Write a token-length histogram (needs --tokenizer)."
    )
    validate.set_defaults(func=run_data_validate)

    synth = commands.add_parser(
        "synth",
        help="Write a deterministic TOFU-format set of invented authors.",
        description="Writes full/forget/retain/*_perturbed/holdout .json files (JSON Lines) and meta.json; "
        "load them with data.tofu_dir: DIR and tofu:forget etc.",
    )
    synth.add_argument("--authors", type=int, default=20, help="Number of authors in full.json.")
    synth.add_argument("--seed", type=int, default=0, help="Generator seed; the same seed gives the same files.")
    synth.add_argument("--out", required=True, help="Output folder (must be empty unless --overwrite).")
    synth.add_argument("--forget-pct", type=float, default=10.0, help="Share of authors to forget, in percent.")
    synth.add_argument("--holdout-authors", type=int, default=None, help="Authors kept out of full.json.")
    synth.add_argument("--rows-per-author", type=int, default=10, help="Questions per author (1..12).")
    synth.add_argument("--overwrite", action="store_true", help="Allow a non-empty output folder.")
    synth.set_defaults(func=run_data_synth)
    return parser


def run_data_validate(args: argparse.Namespace) -> int:
    """Load, validate and summarize; print `error: ...` to stderr and return 1 on a user error."""
    from llm_unlearn.data.sources import load_rows

    try:
        if args.plot and not args.tokenizer:
            raise ConfigError("--plot needs --tokenizer to count tokens")
        data = DataConfig(
            forget=args.file,
            retain=args.retain,
            tofu_dir=args.tofu_dir,
            question_key=args.question_key,
            answer_key=args.answer_key,
            text_key=args.text_key,
            max_length=args.max_length,
            truncation=args.truncation,
        )
        tokenizer = None
        if args.tokenizer:
            from llm_unlearn.models import load_tokenizer

            tokenizer = load_tokenizer(args.tokenizer)
        forget = load_rows(args.file, data, role="forget")
        retain = load_rows(args.retain, data, role="retain") if args.retain else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report lists them
            _, _, report = validate_forget_retain(
                forget,
                retain,
                tokenizer=tokenizer,
                max_length=args.max_length,
                truncation=args.truncation,
                forget_name=args.file,
                retain_name=args.retain or "retain set",
            )
    except UnlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    if args.plot:
        plot_token_lengths(report, args.plot)
        print(f"token-length histogram: {args.plot}")
    return 0


def plot_token_lengths(report: ValidationReport, path: str) -> None:
    """Histogram of tokens per row (forget and retain) with the max_length cut-off, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    lengths = report.forget_lengths + report.retain_lengths
    top = max(max(lengths), report.max_length or 0) + 1
    for name, values in (("forget", report.forget_lengths), ("retain", report.retain_lengths)):
        if values:
            ax.hist(values, bins=50, range=(0, top), alpha=0.6, label=f"{name} ({len(values)} rows)")
    ax.axvline(report.max_length, color="black", linestyle="--", label=f"max_length={report.max_length}")
    ax.set_xlabel("tokens per row (prompt + answer)")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_data_synth(args: argparse.Namespace) -> int:
    """Write the synthetic set and print where; return 1 on a user error."""
    from llm_unlearn.data.synth import write_synthetic_set

    try:
        out = write_synthetic_set(
            args.out,
            n_authors=args.authors,
            seed=args.seed,
            forget_pct=args.forget_pct,
            holdout_authors=args.holdout_authors,
            rows_per_author=args.rows_per_author,
            overwrite=args.overwrite,
        )
    except UnlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = sorted(p.name for p in out.iterdir())
    print(f"wrote {len(files)} files to {out}: {', '.join(files)}")
    print(f"use it with data.tofu_dir: {out} and data.forget: tofu:forget, data.retain: tofu:retain")
    return 0


__all__ = ["add_data_parser", "plot_token_lengths", "run_data_synth", "run_data_validate"]
