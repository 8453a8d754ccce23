"""Resolve a data spec (`tofu:...`, `synth:...`, or a path) into rows. The one entry point the recipes call.

Holds the dispatch only: TOFU folders and author splits are in tofu.py, users' files in requests.py.

Specs:
    tofu:SPLIT          a named TOFU split (full, forget01, retain99, forget10_perturbed, retain_perturbed,
                        real_authors_perturbed, world_facts_perturbed, ...) from `data.tofu_dir`,
                        `$LLM_UNLEARN_TOFU_DIR` or ../shared/data/tofu, else the hub dataset `locuslab/TOFU`.
    tofu:K=V,...        an author split, e.g. `tofu:authors=20,forget=10%,part=retain` (see
                        `llm_unlearn.data.tofu.parse_split_spec`); `part` defaults to the role.
    synth:PART          the shipped fictitious authors: full, forget, retain, forget_perturbed,
                        retain_perturbed, holdout, real_authors_perturbed, world_facts_perturbed;
                        `synth:` alone is the part named like the role. Author splits work too.
    PATH                a JSONL, JSON, CSV or Parquet file or a `datasets.save_to_disk` folder, with
                        columns `data.question_key` / `data.answer_key`, or `data.text_key` for passages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_unlearn.config import DataConfig
from llm_unlearn.data.requests import read_records
from llm_unlearn.data.synth import DEFAULT_SYNTH_DIR
from llm_unlearn.data.tofu import find_tofu_dir, load_tofu
from llm_unlearn.errors import DataError

PREFIXES = ("tofu:", "synth:")


def load_rows(spec: str, data: DataConfig | None = None, role: str = "forget") -> list[dict[str, Any]]:
    """Load the rows a data spec names (see the module docstring).

    Args:
        spec: the spec, e.g. `data.forget` or `data.retain` of a recipe.
        data: column names and the TOFU folder; None uses `DataConfig()` defaults.
        role: "forget", "retain" or another word; names the default part of `tofu:`/`synth:` author splits.

    Returns:
        Rows with `question` and `answer` (or `text`), optional TOFU fields, `author` where known, and
        `source` = "FILE:LINE" for error messages.

    Raises:
        DataError: unknown prefix, missing file, invalid content (naming file, line and field).
    """
    data = data or DataConfig()
    spec = spec.strip()
    if spec.startswith("tofu:"):
        return load_tofu(spec[len("tofu:") :], find_tofu_dir(data.tofu_dir), role, hub=True, label="tofu")
    if spec.startswith("synth:"):
        return load_tofu(spec[len("synth:") :], DEFAULT_SYNTH_DIR, role, hub=False, label="synth")
    path = Path(spec).expanduser()
    if not path.exists():
        head, sep, _ = spec.partition(":")
        if sep and len(head) > 1 and "/" not in head:
            raise DataError(f"data spec '{spec}': unknown prefix '{head}:'; use tofu:..., synth:... or a file path")
        raise DataError(f"{spec}: no such file or folder (data specs: a path, tofu:SPLIT or synth:PART)")
    return read_records(path, data.question_key, data.answer_key, data.text_key)


__all__ = ["PREFIXES", "load_rows"]
