"""Demo plumbing: phase reuse keyed by settings, the before/after table and the acceptance bar."""

import json

from llm_unlearn.demo import PHASE_MARKER, acceptance, before_after_table, run_phase


def test_phase_is_reused_only_with_identical_settings(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text(str(len(calls)))

    folder, key = run_phase(tmp_path, "target", {"lr": 1e-3}, build, fresh=False)
    assert json.loads((folder / PHASE_MARKER).read_text())["key"] == key
    assert run_phase(tmp_path, "target", {"lr": 1e-3}, build, fresh=False) == (folder, key)
    assert len(calls) == 1  # reused
    _, other_key = run_phase(tmp_path, "target", {"lr": 2e-3}, build, fresh=False)
    assert len(calls) == 2 and other_key != key and (folder / "weights.txt").read_text() == "2"
    run_phase(tmp_path, "target", {"lr": 2e-3}, build, fresh=True)
    assert len(calls) == 3


def test_interrupted_phase_is_not_trusted(tmp_path):
    def crash(folder):
        folder.mkdir(parents=True)
        (folder / "half.bin").write_text("partial")
        raise KeyboardInterrupt

    try:
        run_phase(tmp_path, "retain", {"x": 1}, crash, fresh=False)
    except KeyboardInterrupt:
        pass
    built = []
    run_phase(tmp_path, "retain", {"x": 1}, lambda f: (built.append(f), f.mkdir()), fresh=False)
    assert built and not (tmp_path / "retain" / "half.bin").exists()


def test_table_and_acceptance():
    target = {"forget_quality": 1e-4, "model_utility": 0.5, "forget/probability": 0.9}
    good = {"forget_quality": 2e-3, "model_utility": 0.46, "forget/probability": 0.2}
    bad = {"forget_quality": 5e-4, "model_utility": 0.40}
    table = before_after_table({"target": target, "unlearned": good})
    assert "| Forget probability (lower = forgotten) | 0.9000 | 0.2000 |" in table
    assert (
        "| Forget quality, KS p-value vs retain model (higher = closer to never trained) | 0.0001 | 0.002 |" in table
    )
    assert [ok for _, ok in acceptance(target, good)] == [True, True]
    assert [ok for _, ok in acceptance(target, bad)] == [False, False]


def test_demo_runs_every_phase_on_the_tiny_model_and_reuses_them(tmp_path, tiny_model_dir, capsys):
    from llm_unlearn.config import load_recipe
    from llm_unlearn.demo import DemoConfig, run_demo

    overrides = [
        f"output_dir={tmp_path / 'demo'}",
        f"model={tiny_model_dir}",
        "bf16=false",
        "finetune_lora.r=4",
        "unlearn_lora.r=4",
        "finetune_training.max_steps=2",
        "unlearn_training.max_steps=2",
        "eval_subset=4",
        "examples_shown=2",
    ]
    config = load_recipe(DemoConfig, None, overrides)
    report = run_demo(config)
    text = report.read_text()
    assert "| Forget quality, KS p-value vs retain model" in text and "## Acceptance" in text
    assert text.count("PASS") + text.count("FAIL") >= 2 and "### Forget questions" in text
    out = tmp_path / "demo"
    for folder in ("target", "retain", "eval-target", "eval-retain", "unlearned-npo_rt", "unlearned-merged", "hub"):
        assert (out / folder / PHASE_MARKER).is_file(), folder
    assert (out / "unlearned-npo_rt" / "unlearn_manifest.json").is_file()
    assert (out / "hub" / "README.md").read_text().startswith("---")  # model card with hub metadata
    summary = json.loads((out / "eval-unlearned-npo_rt" / "summary.json").read_text())["summary"]
    assert "forget_quality" in summary and "model_utility" in summary
    capsys.readouterr()

    run_demo(config)  # a rerun reuses every finished phase
    assert capsys.readouterr().out.count("reusing") == 9
