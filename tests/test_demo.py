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
