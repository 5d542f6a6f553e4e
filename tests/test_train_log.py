"""What a run shows and keeps as it goes: log lines without a terminal, train.jsonl streamed and resumable, the
TensorBoard tracker, evaluation during training that never changes training, the TRL-named knobs, old records read
under today's names, trial runs kept out of `results/`, repeats reported."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.pairs import get_pair
from harness.pipeline import RunSpec, check_spec
from harness.records import RunRecord, migrated_train_config
from harness.results.estimates import build_tables
from harness.results.groups import build_groups, group_runs
from harness.trial import results_dir_for, trial_budget, trial_results_dir
from kdcore.errors import HarnessError
from kdcore.progress import labelled, progress_label
from tests.fake_records import make_record, phase
from tests.tiny_training import synthetic_examples, tiny_student
from trainers.loop import TrainConfig, train
from trainers.objectives import load_method
from trainers.train_log import TrainLog, flat_settings

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results"
STEP_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ train hard step (\d+)/(\d+) loss=")


def test_train_jsonl_grows_as_training_goes_and_lines_come_at_least_every_tenth(tmp_path: Path, capsys) -> None:
    log = tmp_path / "train.jsonl"
    seen: list[int] = []
    config = TrainConfig(max_steps=40, batch_size=4, lr=1e-2, checkpoint_every=10)
    train(
        tiny_student(),
        load_method("hard"),
        synthetic_examples(),
        config,
        pad_id=0,
        out_dir=tmp_path / "run",
        on_checkpoint=lambda step: seen.append(len(log.read_text().splitlines())),
        description="train hard",
        log_path=log,
    )
    assert seen == [10, 20, 30, 40]  # on disk, step by step, before training ends
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 41))
    assert all({"loss", "lr", "tokens_per_s"} <= set(row) for row in rows)
    steps = [int(m.group(1)) for line in capsys.readouterr().err.splitlines() if (m := STEP_LINE.match(line))]
    assert steps[-1] == 40 and max(b - a for a, b in zip([0, *steps], steps, strict=False)) <= 4  # 10% of 40


def test_a_resumed_log_drops_the_rows_past_its_checkpoint_and_a_row_a_kill_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    rows = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6))
    path.write_text(rows + '{"step": 6, "lo')  # killed mid-write, after the checkpoint at step 3
    log = TrainLog(path, start=3, max_steps=8, every=1, description="train", writer=True)
    log.step(4, {"loss": 0.5}, lr=0.1, tokens=10)
    log.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]
    fresh = TrainLog(path, start=0, max_steps=8, every=1, description="train", writer=True)
    fresh.close()
    assert path.read_text() == ""  # a fresh start keeps no rows of an earlier attempt


def test_evaluating_during_training_never_changes_training(tmp_path: Path) -> None:
    config = TrainConfig(max_steps=6, batch_size=4, lr=1e-2, eval_every=2)
    student = tiny_student()
    initial = copy.deepcopy(student)
    calls: list[int] = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        torch.manual_seed(123)  # as generation does: it reseeds the global RNG
        calls.append(int(model.training))
        return {"arith": float(torch.rand(()))}

    with_eval = train(student, load_method("hard"), synthetic_examples(), config, pad_id=0, evaluate=evaluate)
    plain = train(initial, load_method("hard"), synthetic_examples(), config, pad_id=0)
    assert calls == [0, 0, 0]  # steps 2, 4 and 6, in eval mode
    assert [i + 1 for i, row in enumerate(with_eval.history) if "eval/arith" in row] == [2, 4, 6]
    assert [row["loss"] for row in with_eval.history] == [row["loss"] for row in plain.history]
    for a, b in zip(student.parameters(), initial.parameters(), strict=True):
        assert torch.equal(a, b)


def tied_student() -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    config = tiny_student().config
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def test_checkpoints_hold_tied_weights_once_and_save_without_warnings(tmp_path: Path, caplog) -> None:
    from safetensors.torch import load_file

    student = tied_student()
    assert student.lm_head.weight is student.model.embed_tokens.weight
    config = TrainConfig(max_steps=2, batch_size=4, lr=1e-2)
    train(student, load_method("hard"), synthetic_examples(), config, pad_id=0, out_dir=tmp_path)
    saved = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert "student.model.embed_tokens.weight" in saved and "student.lm_head.weight" not in saved
    assert "Removed shared tensor" not in caplog.text
    resumed = tied_student()
    train(resumed, load_method("hard"), synthetic_examples(), config, pad_id=0, out_dir=tmp_path)  # loads, strict
    assert resumed.lm_head.weight is resumed.model.embed_tokens.weight
    assert torch.equal(resumed.model.embed_tokens.weight, student.model.embed_tokens.weight)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lr_scheduler_type": "exp"}, "lr_scheduler_type 'exp': must be one of cosine, linear, constant"),
        ({"warmup_ratio": 1.5}, "warmup_ratio 1.5: must be a number in [0, 1]"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps 0: must be a positive integer"),
        ({"max_grad_norm": -1.0}, "max_grad_norm -1.0: must be 0 (off) or a positive number"),
        ({"bf16": "yes"}, "bf16 'yes': must be true or false"),
        ({"eval_every": -2}, "eval_every -2: must be 0 (off) or a positive integer"),
    ],
)
def test_bad_training_settings_are_one_line_errors_before_any_model_loads(setting, message) -> None:
    with pytest.raises(HarnessError, match=re.escape(message)):
        check_spec(RunSpec(pair="tiny", method="soft", train_overrides=setting))


def test_training_knobs_are_part_of_the_recorded_settings() -> None:
    knobs = {
        "gradient_accumulation_steps": 2,
        "warmup_ratio": 0.1,
        "weight_decay": 0.01,
        "max_grad_norm": 0.5,
        "lr_scheduler_type": "linear",
        "max_length": 96,
        "bf16": False,
        "lora_r": 4,
        "lora_alpha": 8.0,
    }
    from harness.pipeline import recorded_settings

    spec = RunSpec(pair="tiny", method="soft", train_overrides=knobs | {"eval_every": 5, "logging_steps": 3})
    pair, objective, config = check_spec(spec)
    train_config = recorded_settings(spec, pair, objective, config)["train_config"]
    assert {k: train_config[k] for k in knobs} == knobs
    assert "eval_every" not in train_config and "logging_steps" not in train_config  # they never change the weights


def test_old_records_read_their_training_settings_under_trl_names() -> None:
    crowded = Path(__file__).with_name("data") / "crowded_results"  # records made before the TRL names
    old = json.loads(next(iter(sorted((crowded / "runs").glob("*.json")))).read_text())["train_config"]
    assert {"grad_accum", "warmup_frac", "mixed_precision"} <= set(old)
    new = migrated_train_config(old)
    assert new["gradient_accumulation_steps"] == old["grad_accum"] and new["warmup_ratio"] == old["warmup_frac"]
    assert new["bf16"] is False and new["lr_scheduler_type"] == "cosine"
    fresh = TrainConfig(max_steps=600, batch_size=32, lr=3e-3, max_length=128).to_dict()
    assert {k: new[k] for k in fresh} == fresh  # a run of today with the committed settings is the same experiment
    assert migrated_train_config(new) is new


def test_flat_settings_are_scalars_for_hyperparameter_tables() -> None:
    flat = flat_settings({"a": {"b": 1, "c": None}, "d": [1, 2], "e": "x", "f": True})
    assert flat == {"a/b": 1, "a/c": "none", "d": "[1, 2]", "e": "x", "f": True}


def test_progress_bars_carry_the_labels_of_their_phase() -> None:
    with progress_label("supervise"), progress_label("shard 3/8"):
        assert labelled("generate") == "supervise · shard 3/8 · generate"
    assert labelled("generate") == "generate"


def test_a_budget_other_than_the_pairs_is_a_trial_and_goes_to_the_scratch_folder(tmp_path: Path) -> None:
    full = RunSpec(pair="tiny", method="soft")
    steps = get_pair("tiny").train["max_steps"]
    assert (
        trial_budget(full) is None
        and trial_budget(RunSpec("tiny", "soft", train_overrides={"max_steps": steps})) is None
    )
    short = RunSpec(pair="tiny", method="soft", train_overrides={"max_steps": 30}, limit=20)
    assert trial_budget(short) == {"limit": 20, "max_steps": 30, "pair_max_steps": steps}
    assert results_dir_for([full], None) == Path("results")
    assert results_dir_for([full, short], None) == trial_results_dir()
    assert results_dir_for([short], tmp_path) == tmp_path  # --results-dir wins


def test_trial_records_get_a_table_of_their_own_after_the_main_one(tmp_path: Path) -> None:
    from kdcore.scores import TaskScore

    def record(method: str, trial: dict | None) -> RunRecord:
        made = make_record("tiny", method, 0, {"arith": TaskScore(score=0.5, n=10)}, {"train": phase(0.01)})
        if trial:
            made.training.trial = trial
            made.run_id += "-trial"
        return made

    trial = {"limit": None, "max_steps": 30, "pair_max_steps": 200}
    records = [record("soft", None), record("hard", None), record("soft", trial)]
    tables = build_tables(records)
    assert tables[0].title == "tiny"  # the main table keeps its name and comes first
    assert re.fullmatch(r"tiny \[trial \w+: max_steps 30 of 200\]", tables[1].title)
    assert [len(t.rows) for t in tables] == [2, 1]
    assert {g.trial for g in build_groups(group_runs(records), "tiny")} == {False}  # compare --pair tiny still works


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_a_trial_run_logs_to_a_file_tracks_to_tensorboard_and_leaves_results_as_committed(
    tmp_path: Path, mini_tiny
) -> None:
    """The CLI with its output sent to a file (no terminal), from a folder holding a copy of the committed results."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from harness.tiny import ensure_tiny_pair

    ensure_tiny_pair()
    shutil.copytree(COMMITTED, tmp_path / "results")
    before = _tree(tmp_path / "results")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "tests.mini_cli", "run", "--method", "soft", "--max-steps", "4", "--limit", "20"]
    args += ["--eval-every", "2", "--report-to", "tensorboard"]
    outputs = []
    for attempt in range(2):
        log = tmp_path / f"out-{attempt}.txt"
        with log.open("w") as out:
            done = subprocess.run(args, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
        outputs.append(log.read_text())
        assert done.returncode == 0, outputs[-1]
    assert _tree(tmp_path / "results") == before  # byte for byte as committed
    assert "leaderboard: results/" not in outputs[0]  # the trial rebuilds the scratch folder's leaderboard
    scratch = trial_results_dir()
    records = sorted((scratch / "runs").glob("tiny-soft-*.json"), key=lambda p: p.stat().st_mtime)[-2:]
    first, second = (json.loads(p.read_text()) for p in records)
    pair_steps = get_pair("tiny").train["max_steps"]
    assert first["training"]["trial"] == {"limit": 20, "max_steps": 4, "pair_max_steps": pair_steps}
    assert [e["step"] for e in first["training"]["evals"]] == [2, 4]
    text = outputs[0]
    for name in first["cost"]["phases"]:
        assert re.search(rf"Z phase {name}: start", text) and re.search(rf"Z phase {name}: done, ", text)
    assert [int(m) for m in re.findall(r"Z train soft step (\d+)/4 loss=", text)] == [1, 2, 3, 4]
    assert second["train_config"] == first["train_config"] and f"same as {first['run_id']}" in outputs[1]
    events = EventAccumulator(str(scratch / "tracking" / first["run_id"]))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("eval/arith")] == [2, 4]
    rows = [json.loads(line) for line in (scratch / first["training"]["log"]).read_text().splitlines()]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([row["loss"] for row in rows])
