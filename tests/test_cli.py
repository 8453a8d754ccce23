"""The `llm-unlearn` CLI: version, help, config show with overrides, errors as messages (not tracebacks)."""

import pytest
import yaml

from llm_unlearn import __version__
from llm_unlearn.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"llm-unlearn {__version__}"


def test_help_lists_every_subcommand(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("config", "model", "data", "methods", "finetune", "unlearn", "eval", "merge", "push", "demo"):
        assert f"    {command}" in out


def test_config_show_resolves_file_overrides_and_defaults(capsys):
    assert main(["config", "show", "configs/unlearn/npo.yaml", "method.beta=0.5", "--kind", "unlearn"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out)
    assert resolved["method"]["name"] == "npo" and resolved["method"]["beta"] == 0.5
    assert resolved["data"]["max_length"] > 0 and "target_modules" in resolved["lora"]


def test_overrides_may_follow_flags(capsys):
    assert main(["config", "show", "configs/unlearn/npo.yaml", "--kind", "unlearn", "lora.r=4"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["lora"]["r"] == 4


def test_config_error_is_a_message_with_exit_code_2(capsys):
    assert main(["config", "show", "configs/unlearn/npo.yaml", "lora.rank=4"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'rank'" in err and "did you mean 'r'" in err and "Traceback" not in err


def test_unknown_flag_is_rejected():
    with pytest.raises(SystemExit) as info:
        main(["config", "show", "configs/unlearn/npo.yaml", "--no-such-flag"])
    assert info.value.code == 2


def test_model_prepare_prints_cached_folder(capsys, smollm2_dir):
    assert main(["model", "prepare", "smollm2-135m"]) == 0
    assert capsys.readouterr().out.strip() == str(smollm2_dir)
    assert main(["model", "prepare", "gpt-17"]) == 2


def test_every_public_name_resolves():
    import llm_unlearn

    assert llm_unlearn.__all__[1:] == sorted(llm_unlearn.__all__[1:])
    for name in llm_unlearn.__all__:
        assert getattr(llm_unlearn, name) is not None
    with pytest.raises(AttributeError):
        llm_unlearn.no_such_name  # noqa: B018
