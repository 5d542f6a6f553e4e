"""`harness tune` on the miniature tiny pair: trials scored on the dev split only (never a training prompt or a test
problem), the same budget for every method, the choice written atomically and applied by `run` (recorded, shown on
the leaderboard) unless the run sets the key itself; bad input is a one-line error before any model loads."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from harness import tune as tuning
from harness.cli import main
from harness.pipeline import RunSpec, run
from harness.results.estimates import leaderboard
from harness.results.render import display_table, render_markdown
from harness.spec import Execution
from harness.tune import (
    DevSplit,
    default_grid,
    parse_grid,
    read_entries,
    trial_settings,
    tune,
    tuned_spec,
    write_entry,
)
from kdcore.errors import HarnessError
from tasks import load_task
from tests.test_residency import PAIRS

DEV_PAIRS = PAIRS.replace("train_prompts = 12\n", "train_prompts = 12\ndev_prompts = 4\n")


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.toml"
    path.write_text(DEV_PAIRS)
    return path


class DevSpy:
    """Records the docs each dev evaluation scores and the training examples each trial trains on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.evaluated: list[list[dict]] = []
        self.trained: list[int] = []
        real_eval, real_train = tuning.evaluate_task, tuning.run_phase

        def evaluate(task, *args, **kwargs):
            self.evaluated.append(task.docs("test"))
            return real_eval(task, *args, **kwargs)

        def phase(ctx, step, *args, **kwargs):
            real_train(ctx, step, *args, **kwargs)
            if step.name == "train":
                self.trained.append(len(ctx.examples))

        monkeypatch.setattr(tuning, "evaluate_task", evaluate)
        monkeypatch.setattr(tuning, "run_phase", phase)


def test_tune_scores_trials_on_the_dev_split_and_writes_the_best(
    own_tiny_cache, pairs_file: Path, tmp_path: Path, monkeypatch
) -> None:
    spy = DevSpy(monkeypatch)
    spec = RunSpec(
        pair="tiny", method="sft", pairs_file=pairs_file, execution=Execution(results_dir=tmp_path / "results")
    )
    entry = tune(spec, grid={"lr": (1e-3, 1e-2)}, budget=4, seeds=(0, 1), tuned_dir=tmp_path / "tuned")
    train = load_task("arith").docs("train")
    test = {d["question"] for d in load_task("arith").docs("test")}
    assert len(spy.evaluated) == 4 and all(docs == train[12:16] for docs in spy.evaluated)  # 2 settings x 2 seeds
    assert not {d["question"] for d in train[12:16]} & ({d["question"] for d in train[:12]} | test)
    assert spy.trained == [12, 12, 12, 12]  # the training prompts only
    assert entry["dev"] == {"task": "arith", "split": "train", "docs": [12, 16]}
    assert [t["setting"] for t in entry["trials"]] == [{"lr": 1e-3}, {"lr": 1e-2}]
    means = [sum(t["dev_scores"]) / 2 for t in entry["trials"]]
    assert entry["dev_score"] == max(means) and entry["chosen"] == entry["trials"][means.index(max(means))]["setting"]
    assert read_entries(tmp_path / "tuned", "tiny") == [json.loads(json.dumps(entry))]
    assert not (tmp_path / "results").exists()  # no record, no test-set evaluation
    again = tune(spec, grid={"lr": (1e-3, 1e-2)}, budget=4, seeds=(0, 1), tuned_dir=tmp_path / "tuned")
    assert again == entry and len(spy.trained) == 4  # cached trials: nothing trained again


def test_run_uses_the_tuned_setting_records_it_and_the_leaderboard_says_so(
    own_tiny_cache, pairs_file: Path, tmp_path: Path, monkeypatch
) -> None:
    tuned = tmp_path / "tuned"
    spec = RunSpec(
        pair="tiny", method="sft", pairs_file=pairs_file, limit=2, execution=Execution(results_dir=tmp_path / "results")
    )
    entry = tune(spec, grid={"lr": (2e-3, 4e-3)}, budget=2, tuned_dir=tuned)
    applied = tuned_spec(spec, tuned)
    assert applied.train_overrides == {"lr": entry["chosen"]["lr"]} and applied.tuning["grid"] == {"lr": [2e-3, 4e-3]}
    assert tuned_spec(RunSpec(**{**spec.__dict__, "train_overrides": {"lr": 5e-3}}), tuned).tuning is None
    assert tuned_spec(RunSpec(**{**spec.__dict__, "method": "hard"}), tuned).tuning is None
    assert tuned_spec(RunSpec(**{**spec.__dict__, "train_overrides": {"max_steps": 1}}), tuned).tuning is None
    other = tmp_path / "other.toml"
    other.write_text(DEV_PAIRS.replace("train_prompts = 12\n", "train_prompts = 10\n"))
    assert tuned_spec(RunSpec(**{**spec.__dict__, "pairs_file": other}), tuned).tuning is None  # other prompts
    record, _ = run(applied)
    assert record.train_config["lr"] == entry["chosen"]["lr"]
    assert record.train_config["tuning"]["chosen"] == entry["chosen"] and record.train_config["tuning"]["budget"] == 2
    run(RunSpec(**{**spec.__dict__, "seed": 1}))  # untuned: a row of its own
    board = leaderboard(tmp_path / "results")
    rows = {row.tuned for row in board.tables[0].rows}
    assert rows == {"–", f"lr={entry['chosen']['lr']} (grid lr x2; 2 trials on dev)"}
    assert "tuned" in display_table(board.tables[0])[0] and "| tuned |" in render_markdown(board)


def test_every_method_gets_the_same_budget() -> None:
    grid = {"lr": (1, 2, 3, 4, 5, 6), "beta": (0.1, 0.5, 0.9)}
    drawn = trial_settings(grid, 6)
    assert len(drawn) == 6 and len({json.dumps(s, sort_keys=True) for s in drawn}) == 6
    assert drawn == trial_settings(grid, 6)  # fixed seed
    assert len(trial_settings({"lr": (1, 2, 3, 4, 5, 6)}, 6)) == 6
    assert trial_settings({"lr": (1, 2)}, 6) == [{"lr": 1}, {"lr": 2}]


def test_the_default_grid_scales_the_pair_learning_rate(pairs_file: Path) -> None:
    from harness.pairs import get_pair

    pair = get_pair("tiny", pairs_file)
    assert default_grid(pair, "sft") == {"lr": (1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3)}
    assert set(default_grid(pair, "gkd")) == {"lr", "beta"}


def test_bad_input_is_a_one_line_error_before_any_model_loads(tmp_path: Path, pairs_file: Path, monkeypatch) -> None:
    monkeypatch.setattr(tuning, "context", lambda *a, **k: pytest.fail("a model was loaded"))
    no_dev = tmp_path / "no-dev.toml"
    no_dev.write_text(PAIRS)
    with pytest.raises(HarnessError, match="has no dev split: set dev_prompts"):
        tune(RunSpec(pair="tiny", method="sft", pairs_file=no_dev), tuned_dir=tmp_path)
    too_many = tmp_path / "too-many.toml"
    too_many.write_text(PAIRS.replace("train_prompts = 12\n", "train_prompts = 19999\ndev_prompts = 4\n"))
    with pytest.raises(HarnessError, match="train_prompts \\+ dev_prompts = 20003 but 'arith' has 20000 train docs"):
        tune(RunSpec(pair="tiny", method="sft", pairs_file=too_many), tuned_dir=tmp_path)
    spec = RunSpec(pair="tiny", method="sft", pairs_file=pairs_file, train_overrides={"lr": 1e-3})
    with pytest.raises(HarnessError, match="'lr' is both set"):
        tune(spec, grid={"lr": (1e-3,)}, tuned_dir=tmp_path)
    with pytest.raises(HarnessError, match=r"unknown"):
        tune(RunSpec(pair="tiny", method="sft", pairs_file=pairs_file), grid={"nope": (1,)}, tuned_dir=tmp_path)
    with pytest.raises(HarnessError, match="--budget 0"):
        tune(RunSpec(pair="tiny", method="sft", pairs_file=pairs_file), budget=0, tuned_dir=tmp_path)
    for bad in ("lr", "lr=", "=1"):
        with pytest.raises(HarnessError, match="malformed --grid"):
            parse_grid([bad])
    with pytest.raises(HarnessError, match="learning rates must be positive"):
        parse_grid(["lr=0.1,-1"])
    bad_pairs = tmp_path / "bad.toml"
    bad_pairs.write_text(PAIRS.replace("train_prompts = 12\n", "train_prompts = 12\ndev_prompts = -1\n"))
    with pytest.raises(HarnessError, match="'dev_prompts' must be a non-negative integer"):
        tune(RunSpec(pair="tiny", method="sft", pairs_file=bad_pairs), tuned_dir=tmp_path)
    (tmp_path / "tiny.json").write_text('{"entries": [{"method": "sft"}]}')
    with pytest.raises(HarnessError, match=r"malformed tuned settings .*tiny.json: entry 0 has no 'method_params'"):
        tuned_spec(RunSpec(pair="tiny", method="sft", pairs_file=pairs_file), tmp_path)
    (tmp_path / "tiny.json").write_text("{")
    with pytest.raises(HarnessError, match="malformed tuned settings"):
        tuned_spec(RunSpec(pair="tiny", method="sft", pairs_file=pairs_file), tmp_path)


def test_concurrent_writes_keep_every_entry(tmp_path: Path) -> None:
    def entry(method: str) -> dict:
        fields = {k: {} for k in ("method_params", "train_overrides", "grid", "dev", "chosen")}
        return {"method": method, **fields, "budget": 1, "seeds": [0], "dev_score": 0.5}

    threads = [threading.Thread(target=write_entry, args=(tmp_path, "tiny", entry(f"m{i}"))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e["method"] for e in read_entries(tmp_path, "tiny")) == [f"m{i}" for i in range(8)]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["tiny.json"]  # no temporary left


def test_dev_split_is_the_train_docs_after_the_training_prompts() -> None:
    task = load_task("arith")
    dev = DevSplit(task, 5, 9)
    assert dev.docs("test") == dev.docs("train") == task.docs("train")[5:9]
    assert dev.score(dev.docs()[0], task.reference(dev.docs()[0])) == 1.0


def test_cli_tune_writes_the_tuned_file(own_tiny_cache, pairs_file: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tuning, "TUNED_DIR", tmp_path / "tuned")
    args = ["harness", "tune", "--pair", "tiny", "--method", "sft", "--grid", "lr=1e-3", "--budget", "1"]
    monkeypatch.setattr(sys, "argv", [*args, "--pairs-file", str(pairs_file)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    (entry,) = read_entries(tmp_path / "tuned", "tiny")
    assert entry["chosen"] == {"lr": 1e-3} and entry["budget"] == 1
