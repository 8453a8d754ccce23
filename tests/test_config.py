"""Recipe config loading: types, unknown keys with suggestions, overrides, missing fields."""

from dataclasses import dataclass, field

import pytest

from llm_unlearn.config import (
    FinetuneRecipe,
    UnlearnRecipe,
    build_dataclass,
    load_recipe,
    parse_override,
    recipe_to_dict,
)
from llm_unlearn.errors import ConfigError


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_overrides_resolve_to_typed_dataclasses(tmp_path):
    path = write(
        tmp_path,
        "model:\n  name_or_path: some/folder\nlora:\n  r: 8\n  target_modules: [q_proj, v_proj]\n"
        "method:\n  name: npo\n  beta: 1\ntraining:\n  learning_rate: 1e-4\n",
    )
    recipe = load_recipe(UnlearnRecipe, path, ["method.beta=0.5", "lora.alpha=64", "training.num_train_epochs=3"])
    assert recipe.model.name_or_path == "some/folder"
    assert recipe.lora.r == 8 and recipe.lora.alpha == 64
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.method.name == "npo" and recipe.method.beta == 0.5 and isinstance(recipe.method.beta, float)
    assert recipe.training == {"learning_rate": 1e-4, "num_train_epochs": 3}
    assert recipe_to_dict(recipe)["method"]["beta"] == 0.5
    assert recipe.data.max_length == 256  # untouched defaults survive


def test_unknown_key_names_file_and_suggests_closest(tmp_path):
    path = write(tmp_path, "lora:\n  rank: 8\n")
    with pytest.raises(ConfigError, match=r"recipe\.yaml.*lora.*unknown key 'rank'.*did you mean 'r'"):
        load_recipe(UnlearnRecipe, path)


def test_unknown_section_suggests(tmp_path):
    path = write(tmp_path, "methd:\n  name: npo\n")
    with pytest.raises(ConfigError, match=r"unknown key 'methd'.*did you mean 'method'"):
        load_recipe(UnlearnRecipe, path)


def test_unknown_training_argument_suggests(tmp_path):
    path = write(tmp_path, "training:\n  learning_rte: 0.1\n")
    with pytest.raises(ConfigError, match=r"recipe\.yaml.*training.*'learning_rte'.*did you mean 'learning_rate'"):
        load_recipe(UnlearnRecipe, path)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("lora:\n  r: eight\n", r"lora\.r: expected int, got str"),
        ("lora:\n  enabled: 1\n", r"lora\.enabled: expected true/false"),
        ("lora:\n  target_modules: q_proj\n", r"lora\.target_modules: expected a list"),
        ("method:\n  beta: [1]\n", r"method\.beta: expected"),
        ("model: smollm2\n", r"model: expected a mapping"),
        ("model:\n  dtype: fp8\n", r"model\.dtype.*not one of"),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("lora: {r: 1\n", r"invalid YAML"),
    ],
)
def test_wrong_types_and_values_name_the_key(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_recipe(UnlearnRecipe, path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_recipe(UnlearnRecipe, tmp_path / "nope.yaml")


def test_missing_required_field_is_named():
    @dataclass
    class Needs:
        path: str
        size: int = field(default=1)

    with pytest.raises(ConfigError, match="missing required field.*path"):
        build_dataclass(Needs, {"size": 2}, "section")


def test_override_parsing():
    assert parse_override("training.learning_rate=1e-4") == (["training", "learning_rate"], 1e-4)
    assert parse_override("lora.enabled=false") == (["lora", "enabled"], False)
    assert parse_override("lora.target_modules=[q_proj, k_proj]")[1] == ["q_proj", "k_proj"]
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("training.learning_rate")


def test_override_into_non_section_fails(tmp_path):
    path = write(tmp_path, "output_dir: out\n")
    with pytest.raises(ConfigError, match="not a section"):
        load_recipe(UnlearnRecipe, path, ["output_dir.x=1"])


def test_finetune_recipe_defaults_train_on_everything():
    recipe = load_recipe(FinetuneRecipe)
    assert recipe.data.forget == "synth:full" and recipe.data.retain is None


def test_override_of_a_mapping_field_keeps_its_other_defaults():
    from llm_unlearn.demo import DemoConfig

    config = load_recipe(DemoConfig, None, ["unlearn_training.learning_rate=2e-4"])
    assert config.unlearn_training["learning_rate"] == 2e-4
    assert config.unlearn_training["num_train_epochs"] == DemoConfig().unlearn_training["num_train_epochs"]
