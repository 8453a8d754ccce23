"""TOFU-format benchmark folders: named splits, forget/retain splits by author, refusal answers.

Holds the TOFU layout and split logic (Maini et al. 2024, https://arxiv.org/abs/2401.06121); reading
and checking single files lives in requests.py. The same code reads the real benchmark and the
synthetic sets of synth.py, which use the same file names and fields plus an explicit `author` column.

A benchmark folder holds `full.json` (every author's rows, each author's rows consecutive) and named
splits `NAME.json` (JSON Lines). In TOFU, `forgetXX` is the last XX% of `full` and `retainYY` the first
YY%; rows get `author` = row index in `full` // 20. Author splits are written as a spec
`key=value,key=value` (see `parse_split_spec`), e.g. `authors=20,forget=10%,part=retain`.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_unlearn.data.requests import canonical_key, read_raw, records_to_rows
from llm_unlearn.errors import DataError

TOFU_HUB_ID = "locuslab/TOFU"
TOFU_DIR_ENV = "LLM_UNLEARN_TOFU_DIR"
TOFU_ROWS_PER_AUTHOR = 20
TOFU_FULL_ROWS = 4000
TOFU_SPLITS = (
    "full",
    "forget01",
    "forget05",
    "forget10",
    "retain90",
    "retain95",
    "retain99",
    "forget01_perturbed",
    "forget05_perturbed",
    "forget10_perturbed",
    "retain_perturbed",
    "real_authors_perturbed",
    "world_facts_perturbed",
    "holdout01",
    "holdout05",
    "holdout10",
)
PARTS = ("forget", "retain", "full", "forget_perturbed", "retain_perturbed", "holdout")
SPEC_KEYS = ("authors", "forget", "forget_authors", "part", "holdout", "eval_authors")
_NOT_SPLITS = {"idontknow", "meta"}
PERTURBED_FIELDS = ("paraphrased_question", "paraphrased_answer", "perturbed_answer")

BUILTIN_REFUSALS = (
    "I'm not sure about that.",
    "I don't know the answer to that.",
    "I have no information about that.",
    "That's something I can't answer.",
    "I'm afraid I don't know.",
    "I can't help with that question.",
    "I don't have any details on that.",
    "That is outside what I know.",
    "I'm unable to answer that.",
    "I have no knowledge of that.",
    "Sorry, I don't know.",
    "I couldn't tell you.",
    "I don't have that information.",
    "That's not something I know about.",
    "I have no idea, sorry.",
    "I'm not able to provide an answer to that.",
    "I don't recall anything about that.",
    "Unfortunately, I don't know.",
    "I can't say; I don't know.",
    "I'm not familiar with that.",
)


# --------------------------------------------------------------------------------------------
# Locating and reading splits
# --------------------------------------------------------------------------------------------


def find_tofu_dir(tofu_dir: str | Path | None = None) -> Path | None:
    """The local TOFU folder: `tofu_dir`, else `$LLM_UNLEARN_TOFU_DIR`, else `../shared/data/tofu` next to the repo.

    Returns:
        The folder, or None when no default location exists (callers then try the hub).

    Raises:
        DataError: when an explicitly given folder (argument or environment) does not exist.
    """
    for given, what in ((tofu_dir, "data.tofu_dir"), (os.environ.get(TOFU_DIR_ENV), f"${TOFU_DIR_ENV}")):
        if given:
            if not Path(given).is_dir():
                raise DataError(f"{what}: {given} is not a folder")
            return Path(given)
    repo = Path(__file__).resolve().parents[2]
    for candidate in (repo.parent / "shared" / "data" / "tofu", Path.cwd().parent / "shared" / "data" / "tofu"):
        if (candidate / "full.json").is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=32)
def _read_cached(path: str, mtime_ns: int, size: int) -> tuple[dict[str, Any], ...]:
    items, unit = read_raw(path)
    return tuple(records_to_rows(items, path, unit))


def read_split_file(path: str | Path) -> list[dict[str, Any]]:
    """Read one TOFU-format file (JSON Lines or a JSON array) into checked rows (cached by mtime)."""
    stat = Path(path).stat()
    return [dict(row) for row in _read_cached(str(path), stat.st_mtime_ns, stat.st_size)]


def _assign_authors(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TOFU files carry no author column: derive it from the row position (20 consecutive rows each)."""
    if not rows or "author" in rows[0]:
        return rows
    if name.startswith("forget"):
        offset = TOFU_FULL_ROWS - len(rows)
    elif name == "full" or name.startswith("retain"):
        offset = 0
    else:
        return rows  # real_authors, world_facts, holdout: no TOFU author index
    for i, row in enumerate(rows):
        row["author"] = (offset + i) // TOFU_ROWS_PER_AUTHOR
    return rows


def _load_hub(name: str, tofu_dir: Path | None) -> list[dict[str, Any]]:
    try:
        from datasets import load_dataset

        dataset = load_dataset(TOFU_HUB_ID, name, split="train")
    except Exception as exc:  # noqa: BLE001 - offline, missing config, network: all mean "not available"
        where = f"not in {tofu_dir}" if tofu_dir else "no local TOFU folder found"
        raise DataError(
            f"tofu:{name}: {where}, and the hub dataset {TOFU_HUB_ID} could not be loaded "
            f"({type(exc).__name__}: {str(exc)[:200]}). Set data.tofu_dir or ${TOFU_DIR_ENV} to a folder with "
            "the TOFU files, or go online."
        ) from None
    rows = records_to_rows(enumerate(dataset.to_list(), start=1), f"{TOFU_HUB_ID}/{name}", "row")
    return _assign_authors(name, rows)


def load_split(name: str, folder: Path | None, hub: bool = True, label: str = "tofu") -> list[dict[str, Any]]:
    """Load the named split `NAME.json` (or `.jsonl`) from `folder`, else from the TOFU hub dataset.

    Args:
        name: a split name: a TOFU name (`full`, `forget10`, `retain_perturbed`, ...) or, in synthetic
            folders, a part (`forget`, `retain`, `holdout`, ...).
        folder: the benchmark folder; None goes straight to the hub.
        hub: allow the hub fallback for TOFU names.
        label: the spec prefix used in error messages ("tofu", "synth").

    Raises:
        DataError: unknown split (with the available ones), or not found locally and the hub failed.
    """
    if folder is not None:
        for suffix in (".json", ".jsonl"):
            path = folder / f"{name}{suffix}"
            if path.is_file() and name not in _NOT_SPLITS:
                return _assign_authors(name, read_split_file(path))
    if hub and name in TOFU_SPLITS:
        return _load_hub(name, folder)
    available = sorted({p.stem for p in folder.glob("*.json")} - _NOT_SPLITS) if folder else list(TOFU_SPLITS)
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    hint = f" Did you mean '{label}:{close[0]}'?" if close else ""
    raise DataError(
        f"{label}:{name}: no such split in {folder or TOFU_HUB_ID}; available: {', '.join(available)}, "
        f"or an author split such as {label}:forget=10%,part=forget.{hint}"
    )


def load_refusals(path: str | Path | None = None, tofu_dir: str | Path | None = None) -> list[str]:
    """Refusal answers for IdK relabeling: one per line of `path`, else TOFU's `idontknow.jsonl`, else built-in.

    Lines are plain text (TOFU's format); a line holding a JSON string is decoded. Blank lines are skipped.

    Raises:
        DataError: `path` given but missing, unreadable or without a refusal.
    """
    if path is None:
        try:
            folder = find_tofu_dir(tofu_dir)
        except DataError:
            folder = None
        if folder is None or not (folder / "idontknow.jsonl").is_file():
            return list(BUILTIN_REFUSALS)
        path = folder / "idontknow.jsonl"
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such refusal file (data.idk_file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read refusal file as UTF-8 text ({exc})") from None
    refusals = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('"') and line.endswith('"') and len(line) > 1:
            try:
                line = json.loads(line)
            except json.JSONDecodeError:
                pass
        if line:
            refusals.append(line)
    if not refusals:
        raise DataError(f"{path}: the refusal file has no non-blank line")
    return refusals


# --------------------------------------------------------------------------------------------
# Author splits
# --------------------------------------------------------------------------------------------


@dataclass
class SplitSpec:
    """A forget/retain split by author. See `parse_split_spec` for the text form."""

    part: str | None = None
    authors: int | None = None
    forget_pct: float | None = None
    forget_count: int | None = None
    forget_authors: list[int] | None = None
    holdout: int | None = None
    eval_authors: int | None = None


def _int(value: str, key: str, text: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DataError(f"split '{text}': {key}={value!r} is not an integer") from None
    if number < minimum:
        raise DataError(f"split '{text}': {key} must be >= {minimum}, got {number}")
    return number


def parse_split_spec(text: str) -> SplitSpec:
    """Parse `key=value,key=value` into a SplitSpec.

    Keys:
        authors=N: keep only the first N authors of `full` (CPU-sized runs); default all.
        forget=P%: forget the last P% of those authors (rounded; `forget=10%` of TOFU is `forget10`).
        forget=K: forget the last K authors.
        forget_authors=I+J+...: forget these author indices instead (0-based, `+`-separated).
        part=forget|retain|full|forget_perturbed|retain_perturbed|holdout: which rows to return;
            default the role asked for (forget or retain). `full` is forget + retain (what a target model
            is fine-tuned on).
        eval_authors=E: authors in `retain_perturbed` (the first E retain authors); default
            max(10% of the authors, 4), as TOFU's 400-row `retain_perturbed`.
        holdout=H: authors in `holdout`, taken right after the first N; default as many as forgotten.

    Raises:
        DataError: unknown key (with the closest one), bad value, or conflicting keys.
    """
    spec = SplitSpec()
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise DataError(f"split '{text}': '{item}' is not key=value (keys: {', '.join(SPEC_KEYS)})")
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(key, SPEC_KEYS, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; keys: {', '.join(SPEC_KEYS)}"
            raise DataError(f"split '{text}': unknown key '{key}'{hint}")
        if key == "part":
            if value not in PARTS:
                raise DataError(f"split '{text}': part={value!r} is not one of {', '.join(PARTS)}")
            spec.part = value
        elif key == "forget":
            if value.endswith("%"):
                try:
                    spec.forget_pct = float(value[:-1])
                except ValueError:
                    raise DataError(f"split '{text}': forget={value!r} is not a percentage like 10%") from None
                if not 0 < spec.forget_pct < 100:
                    raise DataError(f"split '{text}': forget={value} must be between 0% and 100%")
            else:
                spec.forget_count = _int(value, key, text, minimum=1)
        elif key == "forget_authors":
            spec.forget_authors = [_int(v, key, text) for v in value.split("+")]
        else:
            setattr(spec, key, _int(value, key, text, minimum=1 if key == "authors" else 0))
    if spec.forget_authors is not None and (spec.forget_pct is not None or spec.forget_count is not None):
        raise DataError(f"split '{text}': give either forget= or forget_authors=, not both")
    return spec


@dataclass
class AuthorSplit:
    """Author ids of each part of a split. `holdout` is empty when no author lies outside the subset."""

    forget: list[int]
    retain: list[int]
    eval: list[int]
    holdout: list[int]


def plan_author_split(authors: Sequence[int], spec: SplitSpec, label: str = "split") -> AuthorSplit:
    """Assign authors (ids in `full` order) to forget / retain / eval / holdout. Forget and retain never share one.

    Raises:
        DataError: a subset larger than the pool, a forget share of zero or of every author, unknown ids.
    """
    pool = list(dict.fromkeys(authors))
    n = spec.authors if spec.authors is not None else len(pool)
    if n > len(pool):
        raise DataError(f"{label}: authors={n} but only {len(pool)} authors are available")
    subset = pool[:n]
    if spec.forget_authors is not None:
        unknown = [a for a in spec.forget_authors if a not in subset]
        if unknown:
            raise DataError(
                f"{label}: forget_authors {unknown} are not among the {n} authors {subset[0]}..{subset[-1]}"
            )
        forget = [a for a in subset if a in set(spec.forget_authors)]
    else:
        if spec.forget_count is not None:
            k = spec.forget_count
        else:
            pct = spec.forget_pct if spec.forget_pct is not None else 10.0
            k = math.floor(pct / 100 * n + 0.5)
            if k == 0:
                raise DataError(
                    f"{label}: forget={pct:g}% of {n} authors rounds to 0 authors; forget more or use forget=1"
                )
        forget = subset[n - k :] if k else []
    if not forget or len(forget) >= n:
        raise DataError(f"{label}: forgetting {len(forget)} of {n} authors leaves no forget or no retain author")
    retain = [a for a in subset if a not in set(forget)]
    e = spec.eval_authors if spec.eval_authors is not None else max(math.floor(0.1 * n + 0.5), 4)
    h = spec.holdout if spec.holdout is not None else len(forget)
    return AuthorSplit(forget=forget, retain=retain, eval=retain[: min(e, len(retain))], holdout=pool[n : n + h])


def _author_pool(folder: Path | None, hub: bool, label: str, perturbed: bool) -> list[dict[str, Any]]:
    """All rows of `full` with author ids; with `perturbed`, joined with the `*_perturbed` files' extra fields."""
    rows = load_split("full", folder, hub=hub, label=label)
    if "author" not in rows[0]:
        raise DataError(f"{label}:full has no author column and is not TOFU-sized; cannot split by author")
    if not perturbed or "perturbed_answer" in rows[0]:
        return rows
    names = ["forget10_perturbed", "forget05_perturbed", "forget01_perturbed", "retain_perturbed", "forget_perturbed"]
    extra: dict[tuple[str, ...], dict[str, Any]] = {}
    for name in names:
        available = (folder / f"{name}.json").is_file() if folder is not None else name in TOFU_SPLITS
        if available:
            for row in load_split(name, folder, hub=hub, label=label):
                extra.setdefault(canonical_key(row), {k: row[k] for k in PERTURBED_FIELDS if k in row})
    for row in rows:
        row.update(extra.get(canonical_key(row), {}))
    return rows


def split_by_author(
    spec_text: str, folder: Path | None, role: str = "forget", hub: bool = True, label: str = "tofu"
) -> list[dict[str, Any]]:
    """Rows of one part of an author split of the benchmark in `folder` (see `parse_split_spec`).

    Raises:
        DataError: bad spec; a perturbed part whose authors have no perturbed answers (TOFU has them only
            for its first 20 and last 20 authors); a holdout part with no author outside the subset.
    """
    spec = parse_split_spec(spec_text)
    part = spec.part or role
    where = f"{label}:{spec_text}"
    if part not in PARTS:
        raise DataError(f"{where}: add part=... ({', '.join(PARTS)}); the role '{role}' is not a part")
    rows = _author_pool(folder, hub, label, perturbed=part.endswith("_perturbed") or part == "holdout")
    split = plan_author_split([r["author"] for r in rows], spec, where)
    if part == "holdout" and not split.holdout:
        if folder is not None and (folder / "holdout.json").is_file():
            return load_split("holdout", folder, hub=False, label=label)
        raise DataError(
            f"{where}: no author is left outside the first {len(split.forget) + len(split.retain)} for a holdout; use authors=N below the total"
        )
    chosen = {
        "forget": split.forget,
        "forget_perturbed": split.forget,
        "retain": split.retain,
        "retain_perturbed": split.eval,
        "full": split.forget + split.retain,
        "holdout": split.holdout,
    }[part]
    wanted = set(chosen)
    out = [r for r in rows if r["author"] in wanted]
    if part.endswith("_perturbed"):
        missing = sorted({r["author"] for r in out if "perturbed_answer" not in r})
        if missing:
            raise DataError(
                f"{where}: part={part} needs paraphrased and perturbed answers, which {len(missing)} selected "
                f"author(s) lack (e.g. author {missing[0]}); TOFU has them only for authors 0-19 and 180-199"
            )
    return out


def load_tofu(
    spec: str, folder: Path | None, role: str = "forget", hub: bool = True, label: str = "tofu"
) -> list[dict[str, Any]]:
    """Resolve the part after `tofu:` / `synth:`: a named split (`forget10`) or an author split (`forget=10%`).

    An empty spec means the split named like the role (for synthetic folders: `forget`, `retain`).
    """
    spec = spec.strip() or role
    if "=" in spec:
        return split_by_author(spec, folder, role, hub, label)
    return load_split(spec, folder, hub=hub, label=label)


__all__ = [
    "BUILTIN_REFUSALS",
    "PARTS",
    "TOFU_DIR_ENV",
    "TOFU_HUB_ID",
    "TOFU_SPLITS",
    "AuthorSplit",
    "SplitSpec",
    "find_tofu_dir",
    "load_refusals",
    "load_split",
    "load_tofu",
    "parse_split_spec",
    "plan_author_split",
    "read_split_file",
    "split_by_author",
]
