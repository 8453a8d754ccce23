"""Data layer: TOFU-format benchmarks, users' forget requests, synthetic authors, prompt formatting and pairing."""

from llm_unlearn.data.collate import (
    IGNORE_INDEX,
    ForgetRetainDataset,
    PromptFormatter,
    UnlearnCollator,
    draw_refusals,
    pad_examples,
)
from llm_unlearn.data.requests import (
    ValidationReport,
    canonical_key,
    fingerprint,
    read_records,
    validate_forget_retain,
)
from llm_unlearn.data.sources import load_rows
from llm_unlearn.data.synth import DEFAULT_SYNTH_DIR, generate_authors, write_synthetic_set
from llm_unlearn.data.tofu import (
    BUILTIN_REFUSALS,
    TOFU_SPLITS,
    AuthorSplit,
    SplitSpec,
    find_tofu_dir,
    load_refusals,
    load_split,
    parse_split_spec,
    plan_author_split,
)

__all__ = [
    "BUILTIN_REFUSALS",
    "DEFAULT_SYNTH_DIR",
    "IGNORE_INDEX",
    "TOFU_SPLITS",
    "AuthorSplit",
    "ForgetRetainDataset",
    "PromptFormatter",
    "SplitSpec",
    "UnlearnCollator",
    "ValidationReport",
    "canonical_key",
    "draw_refusals",
    "find_tofu_dir",
    "fingerprint",
    "generate_authors",
    "load_refusals",
    "load_rows",
    "load_split",
    "pad_examples",
    "parse_split_spec",
    "plan_author_split",
    "read_records",
    "validate_forget_retain",
    "write_synthetic_set",
]
