"""Resume: a run killed mid-training and started again ends exactly as an uninterrupted run, charged over attempts.

The training-loop tests use a tiny random Llama and synthetic examples; the end-to-end test runs the CLI on the
miniature tiny pair as a subprocess and kills it with SIGKILL once a checkpoint exists.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.accounting import CostLedger
from harness.cli import main
from harness.pipeline import RunSpec, working_folder
from harness.resume import RunState
from harness.spec import Execution
from kdcore.costs import PhaseCost
from kdcore.errors import HarnessError, Interrupted
from tests.tiny_training import synthetic_examples, tiny_student
from trainers.loop import TrainConfig, train
from trainers.objectives import load_method

ROOT = Path(__file__).resolve().parents[1]


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_sigterm_checkpoints_and_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """SIGTERM mid-run: a checkpoint at the end of that step, Interrupted; resuming gives the uninterrupted weights."""
    config = TrainConfig(max_steps=6, batch_size=4, lr=1e-2, seed=3)
    examples = synthetic_examples()
    reference = tiny_student()
    initial = copy.deepcopy(reference)
    full = train(reference, load_method("hard"), examples, config, pad_id=0)

    def sigterm_at_third(chunk: list[dict], index: int) -> list[dict]:
        if index == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return chunk

    with pytest.raises(Interrupted, match=r"stopped by SIGTERM after step 3/6; checkpoint saved"):
        train(
            copy.deepcopy(initial),
            load_method("hard"),
            examples,
            config,
            pad_id=0,
            out_dir=tmp_path,
            on_policy=sigterm_at_third,
        )
    assert (tmp_path / "checkpoint" / "step.txt").read_text() == "3"
    resumed = copy.deepcopy(initial)
    result = train(resumed, load_method("hard"), examples, config, pad_id=0, out_dir=tmp_path)
    assert result.resumed_from == 3 and result.steps == 6
    assert result.history == full.history  # the steps before the interruption come back with the checkpoint
    expected, got = weights(reference), weights(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    objective = load_method("hard")
    token_losses = objective.token_losses

    def nan_from_step_four(logits, targets, teacher, progress):
        terms = token_losses(logits, targets, teacher, progress)
        return terms | {"loss": terms["loss"] * float("nan")} if progress >= 3 / 6 else terms

    objective.token_losses = nan_from_step_four
    config = TrainConfig(max_steps=6, batch_size=4, seed=0, checkpoint_every=1)
    student = tiny_student()
    with pytest.raises(HarnessError, match=r"non-finite loss \(nan\) at step 4: .*last good checkpoint \(step 3\)"):
        train(student, objective, synthetic_examples(), config, pad_id=0, out_dir=tmp_path)
    assert (tmp_path / "checkpoint" / "step.txt").read_text() == "3"
    saved = load_file(tmp_path / "checkpoint" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in saved.values())


def test_cost_over_attempts_sums_fresh_work_and_counts_a_reuse_once(tmp_path: Path) -> None:
    build = PhaseCost(wall_s=10.0, device_hours=10 / 3600, tokens=5)
    first = CostLedger({"supervise": build, "train": PhaseCost(wall_s=4.0, device_hours=4 / 3600, tokens=100)})
    second = CostLedger({"train": PhaseCost(wall_s=6.0, device_hours=6 / 3600, tokens=150)})
    second.reuse("supervise", "k", {"wall_s": 10.0, "device_hours": 10 / 3600})  # its own build, found in the cache
    total = CostLedger.over_attempts([first.so_far(), second.so_far()]).run_cost().to_dict()
    assert total["phases"]["train"]["wall_s"] == pytest.approx(10.0)
    assert total["phases"]["train"]["tokens"] == 250
    assert not total["phases"]["supervise"]["reused"] and total["phases"]["supervise"]["wall_s"] == 10.0
    only_reused = CostLedger.over_attempts([second.so_far()]).run_cost().to_dict()
    assert only_reused["phases"]["supervise"]["reused"]

    state = RunState.begin(tmp_path / "run", lambda: "run-1")
    state.save(first)
    again = RunState.begin(tmp_path / "run", lambda: "other")
    assert again.run_id == "run-1" and again.attempts == 2
    assert again.attempt_costs[0]["train"]["tokens"] == 100


def test_running_phase_is_persisted_with_its_time_so_far() -> None:
    ledger = CostLedger()
    with ledger.phase("train") as cost:
        cost.add_work(10, 2, 6)
        time.sleep(0.01)
        partial = ledger.so_far()["train"]
    assert partial["tokens"] == 10 and partial["wall_s"] >= 0.01 and partial["device_hours"] > 0
    assert ledger.phases["train"].wall_s >= partial["wall_s"]


def run_args(results: Path, *extra: str) -> list[str]:
    return ["run", "--method", "hybrid", "--max-steps", "30", "--limit", "4", "--results-dir", str(results), *extra]


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_result(mini_tiny, tmp_path: Path, monkeypatch) -> None:
    reference_dir, results = tmp_path / "reference", tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["harness", *run_args(reference_dir)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0

    args = run_args(results, "--checkpoint-every", "1")
    folder = working_folder(
        RunSpec(
            pair="tiny",
            method="hybrid",
            train_overrides={"max_steps": 30},
            limit=4,
            execution=Execution(results_dir=results),
        )
    )
    process = subprocess.Popen([sys.executable, "-m", "tests.mini_cli", *args], cwd=ROOT, stderr=subprocess.PIPE)
    step_file = folder / "checkpoint" / "step.txt"
    while process.poll() is None and not (step_file.exists() and int(step_file.read_text() or 0) >= 3):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    killed_at = int(step_file.read_text())
    assert 3 <= killed_at < 30
    first_attempt = json.loads((folder / "run.json").read_text())["attempt_costs"][0]
    assert first_attempt["train"]["wall_s"] > 0 and not list(results.glob("runs/*.json"))

    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    (record_path,) = (results / "runs").glob("*.json")
    (reference_path,) = (reference_dir / "runs").glob("*.json")
    record, reference = json.loads(record_path.read_text()), json.loads(reference_path.read_text())
    assert record["attempts"] == 2 and reference["attempts"] == 1
    assert record["scores"]["arith"]["score"] == reference["scores"]["arith"]["score"]
    assert record["scores"]["arith"]["metrics"] == reference["scores"]["arith"]["metrics"]
    assert record["train_config"] == reference["train_config"]  # the checkpoint interval is not a setting
    completions = [
        [json.loads(line)["completion"] for line in (root / r["scores"]["arith"]["samples"]).read_text().splitlines()]
        for root, r in ((results, record), (reference_dir, reference))
    ]
    assert completions[0] == completions[1]
    logs = [
        [json.loads(line) for line in (root / r["training"]["log"]).read_text().splitlines()]
        for root, r in ((results, record), (reference_dir, reference))
    ]
    assert [row["step"] for row in logs[0]] == list(range(1, 31))  # each step once, though steps were trained twice
    for row in (*logs[0], *logs[1]):
        del row["tokens_per_s"]  # throughput: the only value that depends on the machine
    assert logs[0] == logs[1]  # the same loss curve and learning rates, step for step
    final = load_file(results / "models" / record["run_id"] / "model.safetensors")
    expected = load_file(reference_dir / "models" / reference["run_id"] / "model.safetensors")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert record["cost"]["phases"]["train"]["wall_s"] > first_attempt["train"]["wall_s"]
    assert record["cost"]["phases"]["train"]["tokens"] >= reference["cost"]["phases"]["train"]["tokens"]
    assert not folder.exists()


def test_the_working_folder_follows_the_experiment_not_where_or_how_it_runs(mini_tiny, tmp_path: Path) -> None:
    """Execution settings (results dir, backend, tracker, parallel layout, result-neutral intervals) keep the
    folder, so a run resumes wherever it is started again; a setting that changes the result gives another."""
    base = RunSpec(pair="tiny", method="soft", train_overrides={"max_steps": 30}, limit=4)
    elsewhere = RunSpec(
        pair="tiny",
        method="soft",
        train_overrides={"max_steps": 30, "checkpoint_every": 5},
        limit=4,
        execution=Execution(
            results_dir=tmp_path,
            backend="transformers",
            report_to="tensorboard",
            data_parallel=2,
            gpu_memory_utilization=0.5,
        ),
    )
    assert working_folder(base) == working_folder(elsewhere)
    assert working_folder(base) == working_folder(
        RunSpec(pair="tiny", method="soft", train_overrides={"max_steps": 30}, limit=4, teacher_signal="topk")
    )
    for changed in (
        RunSpec(pair="tiny", method="soft", train_overrides={"max_steps": 30}, limit=4, teacher_signal="online"),
        RunSpec(pair="tiny", method="soft", train_overrides={"max_steps": 30}, limit=5),
        RunSpec(pair="tiny", method="soft", train_overrides={"max_steps": 30}, limit=4, seed=1),
        RunSpec(pair="tiny", method="soft", train_overrides={"max_steps": 30, "lr": 1e-3}, limit=4),
    ):
        assert working_folder(changed) != working_folder(base)
