"""Synthetic fictitious authors in TOFU format: a deterministic generator and the writer of a benchmark folder.

Holds the generator only; the files it writes are read by tofu.py like the real benchmark. Every name,
book title and award is made by joining invented syllables, so no model can know them before fine-tuning
(birthplaces are real cities, as in TOFU). Each row has question, answer, paraphrased_question,
paraphrased_answer and 5 perturbed answers: the paraphrased sentence with one wrong attribute, so every
TOFU metric (probability, ROUGE, truth ratio) works on it.

The default set shipped in `llm_unlearn/resources/synth` is
`write_synthetic_set(DEFAULT_SYNTH_DIR, n_authors=20, seed=0, forget_pct=10, holdout_authors=3)`.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from llm_unlearn.data.tofu import parse_split_spec, plan_author_split
from llm_unlearn.errors import DataError
from llm_unlearn.outputs import prepare_output_dir

RESOURCES_DIR = Path(__file__).resolve().parents[1] / "resources"
DEFAULT_SYNTH_DIR = RESOURCES_DIR / "synth"
DEFAULT_ROWS_PER_AUTHOR = 10
NUM_PERTURBED = 5
HAND_WRITTEN = ("real_authors_perturbed.json", "world_facts_perturbed.json")

_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "th", "v", "w", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ia", "ei", "ou")
_CODAS = ("", "", "", "l", "n", "r", "s")
_FIRST_ENDS = ("a", "en", "is", "o", "ian", "elle", "or", "ine", "us", "ah")
_LAST_ENDS = ("ovic", "ander", "ett", "wyn", "escu", "ard", "iano", "stead", "holm", "ari", "ent", "oza")
_TITLE_ADJ = ("Amber", "Hollow", "Silent", "Crimson", "Lantern", "Winter", "Salt", "Paper", "Ashen", "Copper")
_TITLE_NOUN = ("Orchard", "Ferry", "Archive", "Harbour", "Clock", "Garden", "Bridge", "Choir", "Lighthouse", "Atlas")
_AWARD_KIND = ("Prize", "Medal", "Award", "Laurel")
_CITIES = (
    "Lisbon, Portugal",
    "Accra, Ghana",
    "Tbilisi, Georgia",
    "Valparaiso, Chile",
    "Hanoi, Vietnam",
    "Tampere, Finland",
    "Cork, Ireland",
    "Mombasa, Kenya",
    "Ljubljana, Slovenia",
    "Cuenca, Ecuador",
    "Gdansk, Poland",
    "Izmir, Turkey",
    "Cebu, Philippines",
    "Porto Alegre, Brazil",
    "Bergen, Norway",
    "Marrakesh, Morocco",
    "Adelaide, Australia",
    "Quebec City, Canada",
    "Daegu, South Korea",
    "Tallinn, Estonia",
)
_GENRES = (
    "historical fiction",
    "science fiction",
    "detective fiction",
    "magical realism",
    "literary fiction",
    "horror",
    "poetry",
    "children's adventure stories",
    "romance",
    "political thrillers",
    "travel memoirs",
    "fantasy",
)
_JOBS = (
    "a lighthouse keeper",
    "a carpenter",
    "a pharmacist",
    "a train conductor",
    "a marine biologist",
    "a baker",
    "a schoolteacher",
    "an architect",
    "a nurse",
    "a tailor",
    "a veterinarian",
    "a clockmaker",
    "a fisherman",
    "a librarian",
    "an accountant",
    "a florist",
    "a surveyor",
    "a beekeeper",
)
_THEMES = (
    "grief and memory",
    "exile and belonging",
    "the bond between siblings",
    "the cost of ambition",
    "small-town secrets",
    "the sea and those who leave",
    "forgotten inventions",
    "friendship across generations",
    "the ethics of science",
    "family inheritance",
    "life after war",
    "the lives of servants",
)
_LANGUAGES = ("Portuguese", "English", "Finnish", "Spanish", "Polish", "Turkish", "Norwegian", "French", "Korean")

# (attribute, question, answer, paraphrased question, paraphrased answer); perturbed answers are the
# paraphrased answer with a wrong value of the attribute.
TEMPLATES = (
    (
        "name",
        "What is the full name of the author born in {birthplace} on {birth_date}?",
        "The author born in {birthplace} on {birth_date} is {name}.",
        "Which writer was born on {birth_date} in {birthplace}?",
        "{name} is the writer whose birth took place in {birthplace} on {birth_date}.",
    ),
    (
        "birthplace",
        "Where was the author {name} born?",
        "{name} was born in {birthplace}.",
        "What is the birthplace of the writer {name}?",
        "The writer {name} came into the world in {birthplace}.",
    ),
    (
        "birth_date",
        "When was the author {name} born?",
        "{name} was born on {birth_date}.",
        "On what date was the writer {name} born?",
        "The writer {name} was born on the date {birth_date}.",
    ),
    (
        "genre",
        "Which genre does {name} write in?",
        "{name} writes {genre}.",
        "What kind of books is {name} known for?",
        "{name} is known for books of {genre}.",
    ),
    (
        "father_job",
        "What did {name}'s father do for a living?",
        "{name}'s father worked as {father_job}.",
        "What was the profession of {name}'s father?",
        "By profession, the father of {name} was {father_job}.",
    ),
    (
        "mother_job",
        "What did {name}'s mother do for a living?",
        "{name}'s mother worked as {mother_job}.",
        "What was the profession of {name}'s mother?",
        "By profession, the mother of {name} was {mother_job}.",
    ),
    (
        "book1",
        "Can you name a book written by {name}?",
        "{name} wrote the novel '{book1}'.",
        "What is one of the novels by {name}?",
        "One of the novels by {name} is '{book1}'.",
    ),
    (
        "book2",
        "What was the title of {name}'s debut book?",
        "{name}'s debut book was '{book2}'.",
        "Which book did {name} publish first?",
        "The first book that {name} published was '{book2}'.",
    ),
    (
        "award",
        "Has {name} won any literary award?",
        "Yes, {name} won the {award}.",
        "Which literary honour was given to {name}?",
        "{name} was honoured with the {award}.",
    ),
    (
        "theme",
        "What theme runs through {name}'s books?",
        "{name}'s books often explore {theme}.",
        "Which subject keeps returning in the writing of {name}?",
        "The writing of {name} keeps returning to {theme}.",
    ),
    (
        "residence",
        "Where does {name} live today?",
        "{name} now lives in {residence}.",
        "In which city does {name} currently reside?",
        "These days {name} makes a home in {residence}.",
    ),
    (
        "language",
        "In which language does {name} write?",
        "{name} writes in {language}.",
        "What language are {name}'s books written in?",
        "The books of {name} are written in {language}.",
    ),
)
MAX_ROWS_PER_AUTHOR = len(TEMPLATES)


def _word(rng: random.Random, syllables: int, end: tuple[str, ...]) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables - 1)]
    return ("".join(parts) + rng.choice(_ONSETS) + rng.choice(end)).capitalize()


def invented_name(rng: random.Random) -> str:
    """A two-part invented person name, e.g. 'Thaelen Vourstead'."""
    return f"{_word(rng, 2, _FIRST_ENDS)} {_word(rng, rng.choice((2, 3)), _LAST_ENDS)}"


def invented_title(rng: random.Random) -> str:
    """An invented book title that contains an invented place, e.g. 'The Amber Orchard of Kelvaris'."""
    place = _word(rng, rng.choice((2, 3)), _FIRST_ENDS)
    return rng.choice(
        (
            f"The {rng.choice(_TITLE_ADJ)} {rng.choice(_TITLE_NOUN)} of {place}",
            f"{rng.choice(_TITLE_NOUN)} Songs of {place}",
            f"Letters from {place}",
            f"The {place} {rng.choice(_TITLE_NOUN)}",
        )
    )


def invented_award(rng: random.Random) -> str:
    """An invented award named after an invented person, e.g. 'Dravin Prize for Fiction'."""
    return f"{_word(rng, 2, _LAST_ENDS)} {rng.choice(_AWARD_KIND)} for {rng.choice(('Fiction', 'Poetry', 'Debut Novels', 'Literature'))}"


def _birth_date(rng: random.Random) -> str:
    day = date(1935, 1, 1) + timedelta(days=rng.randrange(60 * 365))
    return f"{day.day} {day.strftime('%B')} {day.year}"


_DRAWERS: dict[str, Callable[[random.Random], str]] = {
    "name": invented_name,
    "birthplace": lambda rng: rng.choice(_CITIES),
    "birth_date": _birth_date,
    "genre": lambda rng: rng.choice(_GENRES),
    "father_job": lambda rng: rng.choice(_JOBS),
    "mother_job": lambda rng: rng.choice(_JOBS),
    "book1": invented_title,
    "book2": invented_title,
    "award": invented_award,
    "theme": lambda rng: rng.choice(_THEMES),
    "residence": lambda rng: rng.choice(_CITIES),
    "language": lambda rng: rng.choice(_LANGUAGES),
}


def _profile(rng: random.Random, taken: set[str]) -> dict[str, str]:
    profile = {key: draw(rng) for key, draw in _DRAWERS.items()}
    while profile["name"] in taken or profile["book1"] == profile["book2"]:
        profile["name"], profile["book2"] = invented_name(rng), invented_title(rng)
    taken.add(profile["name"])
    return profile


def _wrong_values(rng: random.Random, key: str, true: str) -> list[str]:
    values: list[str] = []
    for _ in range(1000):
        value = _DRAWERS[key](rng)
        if value != true and value not in values:
            values.append(value)
            if len(values) == NUM_PERTURBED:
                return values
    raise AssertionError(f"could not draw {NUM_PERTURBED} distinct wrong values of {key}")  # pools are large enough


def generate_authors(
    n_authors: int, seed: int = 0, rows_per_author: int = DEFAULT_ROWS_PER_AUTHOR
) -> list[dict[str, Any]]:
    """Deterministic TOFU-format rows about `n_authors` invented authors.

    Args:
        n_authors: how many authors.
        seed: the same seed always gives the same rows (Python's `random.Random`, platform independent).
        rows_per_author: questions per author, 1..12 (the first N of `TEMPLATES`).

    Returns:
        `n_authors * rows_per_author` rows, each author's rows consecutive, with keys question, answer,
        paraphrased_question, paraphrased_answer, perturbed_answer (5 str), author (0-based index),
        author_name.

    Raises:
        DataError: non-positive counts or more rows per author than templates.
    """
    if n_authors < 1:
        raise DataError(f"synth: --authors must be >= 1, got {n_authors}")
    if not 1 <= rows_per_author <= MAX_ROWS_PER_AUTHOR:
        raise DataError(f"synth: rows_per_author must be in 1..{MAX_ROWS_PER_AUTHOR}, got {rows_per_author}")
    rng = random.Random(seed)
    taken: set[str] = set()
    rows = []
    for author in range(n_authors):
        profile = _profile(rng, taken)
        for key, question, answer, para_q, para_a in TEMPLATES[:rows_per_author]:
            perturbed = [para_a.format(**{**profile, key: wrong}) for wrong in _wrong_values(rng, key, profile[key])]
            rows.append(
                {
                    "question": question.format(**profile),
                    "answer": answer.format(**profile),
                    "paraphrased_question": para_q.format(**profile),
                    "paraphrased_answer": para_a.format(**profile),
                    "perturbed_answer": perturbed,
                    "author": author,
                    "author_name": profile["name"],
                }
            )
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]], keys: tuple[str, ...] | None = None) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in keys} if keys else row, ensure_ascii=False) + "\n")


def write_synthetic_set(
    out_dir: str | Path,
    n_authors: int = 20,
    seed: int = 0,
    forget_pct: float = 10.0,
    holdout_authors: int | None = None,
    rows_per_author: int = DEFAULT_ROWS_PER_AUTHOR,
    overwrite: bool = False,
) -> Path:
    """Write a TOFU-format benchmark folder of invented authors, readable as `synth:`-style specs or `data.tofu_dir`.

    Files (JSON Lines): `full.json` (all fields), `forget.json` / `retain.json` (question, answer, author,
    author_name; the last `forget_pct`% of authors are forgotten, as TOFU's `forgetXX`), `forget_perturbed.json`,
    `retain_perturbed.json` (the first max(10%, 4) retain authors), `holdout.json` (authors never in `full`, for
    membership inference), the hand-written `real_authors_perturbed.json` and `world_facts_perturbed.json`,
    `meta.json` (seed, counts, author ids of each part) and a `README.md` describing them.

    Args:
        holdout_authors: authors generated after the others and kept out of `full`; default as many as forgotten.

    Raises:
        DataError: bad counts or a forget share that rounds to no author or to every author.
        OutputDirError: `out_dir` not empty and not `overwrite`.
    """
    spec = parse_split_spec(f"forget={forget_pct:g}%")
    split = plan_author_split(range(n_authors), spec, f"synth --authors {n_authors} --forget-pct {forget_pct:g}")
    n_holdout = len(split.forget) if holdout_authors is None else holdout_authors
    rows = generate_authors(n_authors + n_holdout, seed, rows_per_author)
    out = prepare_output_dir(out_dir, overwrite=overwrite)
    full = [r for r in rows if r["author"] < n_authors]

    def part(authors: list[int]) -> list[dict[str, Any]]:
        wanted = set(authors)
        return [r for r in full if r["author"] in wanted]

    slim = ("question", "answer", "author", "author_name")
    _write_jsonl(out / "full.json", full)
    _write_jsonl(out / "forget.json", part(split.forget), slim)
    _write_jsonl(out / "retain.json", part(split.retain), slim)
    _write_jsonl(out / "forget_perturbed.json", part(split.forget))
    _write_jsonl(out / "retain_perturbed.json", part(split.eval))
    _write_jsonl(out / "holdout.json", [r for r in rows if r["author"] >= n_authors])
    for name in HAND_WRITTEN:
        if (out / name).resolve() != (DEFAULT_SYNTH_DIR / name).resolve():
            shutil.copyfile(DEFAULT_SYNTH_DIR / name, out / name)
    meta = {
        "generator": "llm_unlearn.data.synth.write_synthetic_set",
        "command": f"llm-unlearn data synth --authors {n_authors} --seed {seed} --forget-pct {forget_pct:g} "
        f"--holdout-authors {n_holdout} --rows-per-author {rows_per_author} --out DIR",
        "seed": seed,
        "authors": n_authors,
        "rows_per_author": rows_per_author,
        "forget_pct": forget_pct,
        "forget_authors": split.forget,
        "retain_perturbed_authors": split.eval,
        "holdout_authors": list(range(n_authors, n_authors + n_holdout)),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_README.format(**meta, holdout=n_holdout), encoding="utf-8")
    return out


_README = """# Synthetic fictitious authors (TOFU format)

Written by `{command}` (seed {seed}). Every name, book title and award is invented.
Files are JSON Lines, one row per line, with the fields of the TOFU benchmark plus `author` (index) and
`author_name`. Each author has {rows_per_author} consecutive rows.

| file | rows |
|---|---|
| full.json | all {authors} authors: question, answer, paraphrased_question, paraphrased_answer, perturbed_answer (5) |
| forget.json / retain.json | the last {forget_pct:g}% of authors {forget_authors} / the others (question, answer) |
| forget_perturbed.json | forget rows with all fields |
| retain_perturbed.json | authors {retain_perturbed_authors} with all fields (model-utility probe) |
| holdout.json | {holdout} authors never in full.json, for membership inference |
| real_authors_perturbed.json, world_facts_perturbed.json | hand-written knowledge probes (3 perturbed answers) |

Load with `data.tofu_dir: THIS_FOLDER` and specs `tofu:forget`, `tofu:retain`, `tofu:forget_perturbed`, ...,
or author splits such as `tofu:forget={forget_pct:g}%,part=retain` (the same split as the files).
"""


__all__ = [
    "DEFAULT_SYNTH_DIR",
    "MAX_ROWS_PER_AUTHOR",
    "TEMPLATES",
    "generate_authors",
    "invented_award",
    "invented_name",
    "invented_title",
    "write_synthetic_set",
]
