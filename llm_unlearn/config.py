"""Recipe configs: typed dataclasses loaded from YAML with `section.key=value` overrides.

Holds the config schema and the generic YAML -> dataclass loader; no model or data loading.
Every error names the file, the key and, for unknown keys, the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm_unlearn.errors import ConfigError


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` (no dot) as a float, as YAML 1.2 and every user expects."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str) -> Any:
    """Parse YAML text with `_YamlLoader`."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelConfig:
    """Which model to load and how."""

    name_or_path: str = field(
        default="smollm2-135m",
        metadata={"help": "Local HF folder, hub id, or the built-in name 'smollm2-135m'."},
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    dtype: str = field(
        default="auto",
        metadata={"help": "'auto' (bf16 on a GPU that supports it, else float32), 'float32', 'bfloat16', 'float16'."},
    )
    quantization: str | None = field(
        default=None, metadata={"help": "None for full precision, '4bit' for QLoRA (bitsandbytes NF4)."}
    )
    adapter: str | None = field(default=None, metadata={"help": "A trained peft adapter folder to load on top."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Passed to from_pretrained."})

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype: {self.dtype!r} is not one of auto, float32, bfloat16, float16")
        if self.quantization not in (None, "4bit"):
            raise ConfigError(f"model.quantization: {self.quantization!r} is not one of null, '4bit'")


@dataclass
class LoraConfig:
    """peft LoRA adapter settings. `enabled: false` means full fine-tuning."""

    enabled: bool = field(default=True, metadata={"help": "Train a LoRA adapter (true) or all weights (false)."})
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (lora_alpha)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch."})
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={"help": "Module names to adapt; default all attention and MLP projections."},
    )

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora.r must be positive, got {self.r}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules must name at least one module")


@dataclass
class DataConfig:
    """Where the forget / retain data come from and how they are formatted."""

    forget: str = field(
        default="synth:forget",
        metadata={
            "help": "Forget set: a file/folder (JSONL, JSON, CSV, Parquet, save_to_disk), 'tofu:SPLIT' "
            "(e.g. tofu:forget01) or 'synth:forget' (the built-in fictitious authors)."
        },
    )
    retain: str | None = field(default="synth:retain", metadata={"help": "Retain set, same forms; null for none."})
    tofu_dir: str | None = field(
        default=None, metadata={"help": "Local folder with the TOFU files; null tries ../shared/data/tofu, then hub."}
    )
    question_key: str = field(default="question", metadata={"help": "Column holding the question."})
    answer_key: str = field(default="answer", metadata={"help": "Column holding the answer."})
    text_key: str | None = field(
        default=None, metadata={"help": "Column with raw text passages (text unlearning); overrides question/answer."}
    )
    max_length: int = field(default=256, metadata={"help": "Max tokens per example (prompt + answer)."})
    truncation: str = field(default="warn", metadata={"help": "Over-long examples: 'warn' (truncate) or 'error'."})
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "null: the tokenizer's chat template if any, else 'Question: {question}\\nAnswer: '."},
    )
    idk_file: str | None = field(
        default=None, metadata={"help": "Refusal answers, one per line (IdkNLL/IdkDPO); null: TOFU idontknow.jsonl."}
    )

    def __post_init__(self) -> None:
        if self.truncation not in ("warn", "error"):
            raise ConfigError(f"data.truncation: {self.truncation!r} is not one of 'warn', 'error'")
        if self.max_length < 8:
            raise ConfigError(f"data.max_length must be >= 8, got {self.max_length}")


@dataclass
class MethodConfig:
    """Which unlearning method (a name in the registry) and its hyperparameters.

    Hyperparameters left null take the method's registered defaults.
    """

    name: str = field(default="npo_rt", metadata={"help": "Registered method name; `llm-unlearn methods` lists them."})
    beta: float | None = field(default=None, metadata={"help": "Inverse temperature of NPO / SimNPO / DPO."})
    simnpo_gamma: float | None = field(default=None, metadata={"help": "SimNPO reward margin gamma."})
    forget_weight: float | None = field(default=None, metadata={"help": "gamma: weight of the forget term."})
    retain_weight: float | None = field(default=None, metadata={"help": "alpha: weight of the retain term."})
    precompute_reference: bool = field(
        default=True, metadata={"help": "Compute reference log-probs of the forget set once before training."}
    )
    forget_nll_ceiling: float | None = field(
        default=50.0, metadata={"help": "Stop when mean forget NLL per token exceeds this (divergence guard)."}
    )


@dataclass
class UnlearnRecipe:
    """A full unlearning recipe: `llm-unlearn unlearn CONFIG`."""

    output_dir: str = field(default="outputs/unlearn", metadata={"help": "Where the adapter/model is written."})
    overwrite: bool = field(default=False, metadata={"help": "Allow writing into a non-empty output_dir."})
    seed: int = field(default=42, metadata={"help": "Seed for sampling and initialisation."})
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    training: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "transformers.TrainingArguments fields (learning_rate, num_train_epochs, ...)."},
    )


@dataclass
class FinetuneRecipe:
    """Supervised fine-tuning of the target or retain model: `llm-unlearn finetune CONFIG`."""

    output_dir: str = field(default="outputs/finetune", metadata={"help": "Where the adapter/model is written."})
    overwrite: bool = field(default=False, metadata={"help": "Allow writing into a non-empty output_dir."})
    seed: int = field(default=42, metadata={"help": "Seed."})
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(forget="synth:full", retain=None))
    training: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainingArguments fields."})


# --------------------------------------------------------------------------------------------
# Generic loader
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} ({value!r})")
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} ({value!r})")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} ({value!r})")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} ({value!r})")
        return value
    if tp in (int, float, str):
        if isinstance(value, bool) or not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} ({value!r})")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build_dataclass(tp, value, where)
    return value


def _unknown_key_message(key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    close = close or [v for v in sorted(valid, key=len, reverse=True) if key.startswith(v) or v.startswith(key)]
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return f"{where}: unknown key '{key}'{hint}"


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from a mapping, recursing into nested dataclasses.

    Raises:
        ConfigError: on unknown keys (with the closest valid key), wrong types or missing required fields.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(key, list(fields), where))
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
        default_factory = fields[key].default_factory
        if isinstance(kwargs[key], dict) and default_factory is not dataclasses.MISSING:
            kwargs[key] = {**default_factory(), **kwargs[key]}  # a mapping field updates its defaults
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required field(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one `section.key=value` override; the value is read as YAML (so 1e-4, true, [a, b] work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected section.key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}': empty key")
    return key.strip().split("."), read_yaml(raw) if raw.strip() else ""


def _apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(path)}: '{part}' is not a section")
    node[path[-1]] = value


def load_recipe(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Load a recipe dataclass from a YAML file plus `section.key=value` overrides.

    Args:
        cls: the recipe dataclass (UnlearnRecipe, FinetuneRecipe, EvalRecipe, ...).
        path: YAML file; None uses the dataclass defaults.
        overrides: command-line overrides, applied after the file.

    Raises:
        ConfigError: naming the file and key for every problem, before any model is loaded.
    """
    tree: dict[str, Any] = {}
    label = "<defaults>"
    if path is not None:
        label = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
        try:
            loaded = read_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}")
        tree = loaded
    for text in overrides or []:
        keys, value = parse_override(text)
        _apply_override(tree, keys, value)
    try:
        recipe = build_dataclass(cls, tree, "")
    except ConfigError as exc:
        raise ConfigError(f"{label}: {str(exc).lstrip(': ')}") from None
    if "training" in tree:
        check_training_args(tree["training"] or {}, label)
    return recipe


def check_training_args(training: dict[str, Any], label: str) -> None:
    """Reject unknown TrainingArguments keys early, with the closest valid key."""
    from transformers import TrainingArguments

    valid = [f.name for f in dataclasses.fields(TrainingArguments)]
    for key in training:
        if key not in valid:
            raise ConfigError(f"{label}: {_unknown_key_message(key, valid, 'training')}")
    if "output_dir" in training:
        raise ConfigError(f"{label}: training.output_dir: set the top-level output_dir instead")


def recipe_to_dict(recipe: Any) -> dict[str, Any]:
    """The fully resolved recipe as plain data (for `config show`, manifests and model cards)."""
    return dataclasses.asdict(recipe)
