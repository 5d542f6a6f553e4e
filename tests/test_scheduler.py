"""`harness sweep --executor local`, `--status` and `--plan`: cells as separate jobs (submitit's local executor),
nothing resubmitted once recorded, a failed cell listed with its log, a pre-empted cell resumed from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness import scheduler
from harness.cost_plan import estimate_cell, load_throughput, throughput_for
from harness.jobs import CellJob, prepare_pair
from harness.pipeline import RunSpec, working_folder
from harness.records import load_records
from harness.spec import Execution
from harness.sweep import cell_name, grid
from kdcore.errors import HarnessError
from tests.scheduled import mini_pairs_file, sweep


def _printed(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


ARGS = ("--pairs", "mini", "--methods", "sft,hard", "--seeds", "0", "--max-steps", "5", "--limit", "5")


@pytest.mark.slow
def test_local_executor_runs_each_cell_as_a_job_and_a_rerun_submits_nothing(
    own_tiny_cache, tmp_path: Path, monkeypatch, capsys
) -> None:
    results, pairs = tmp_path / "results", mini_pairs_file(tmp_path)
    common = (*ARGS, "--pairs-file", str(pairs), "--results-dir", str(results))
    assert sweep(monkeypatch, *common, "--executor", "local") == 0
    records, problems = load_records(results)
    assert sorted(r.method for r in records) == ["hard", "sft"] and not problems
    ledger = [json.loads(p.read_text()) for p in sorted((results / "jobs" / "cells").glob("*.json"))]
    assert len({entry["job_id"] for entry in ledger}) == 2  # two jobs, one per cell
    assert all(Path(entry["stderr"]).exists() for entry in ledger)
    assert all(r.estimate["flops"] > 0 and r.estimate["device"] == "cpu" for r in records)
    assert (results / "leaderboard.md").exists()
    capsys.readouterr()

    assert sweep(monkeypatch, *common, "--executor", "local") == 0
    out = _printed(capsys)
    assert "0 cells submitted, 2 not submitted" in out and out.count("has a record") == 2
    assert len(load_records(results)[0]) == 2

    assert sweep(monkeypatch, *common, "--status") == 0
    out = _printed(capsys)
    assert out.count(" done ") == 2 and "2 done" in out

    assert sweep(monkeypatch, *common, "--plan") == 0
    out = _printed(capsys)
    assert "check on the 2 cells with a record" in out and "measured / estimated device-hours" in out


@pytest.mark.slow
def test_a_failed_cell_is_listed_with_its_log_and_status_says_failed(
    own_tiny_cache, tmp_path: Path, monkeypatch, capsys
) -> None:
    results, pairs = tmp_path / "results", mini_pairs_file(tmp_path)
    # a learning rate that makes the loss NaN: the run stops with a one-line error and writes no record
    common = (*ARGS[:3], "sft", *ARGS[4:], "--lr", "1e30", "--pairs-file", str(pairs), "--results-dir", str(results))
    assert sweep(monkeypatch, *common, "--executor", "local") == 1
    (line,) = [line for line in _printed(capsys).splitlines() if line.startswith("failed:")]
    log = line.rsplit("(log: ", 1)[1].rstrip(")")
    assert Path(log).exists() and "mini-sft-s0-" in line and not load_records(results)[0]
    assert sweep(monkeypatch, *common, "--status") == 0
    assert " failed " in _printed(capsys)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.slow
def test_a_preempted_cell_is_requeued_and_resumes_from_its_checkpoint(own_tiny_cache, tmp_path: Path) -> None:
    """USR2 (what Slurm sends before pre-emption or the time limit) reaches the cell's process mid-training:
    submitit requeues the same call, and the run continues from its last checkpoint (attempt 2)."""
    results = tmp_path / "results"
    template = RunSpec(
        pair="",
        method="",
        limit=2,
        pairs_file=mini_pairs_file(tmp_path),
        train_overrides={"max_steps": 400, "checkpoint_every": 10},
        execution=Execution(results_dir=results),
    )
    (spec,) = grid(["mini"], ["sft"], [0], {}, template)
    prepare_pair([spec])  # the shared phases, here, so the job itself starts training at once
    estimate = estimate_cell(spec, "cpu")
    config = scheduler.ClusterConfig()
    resources = scheduler.job_resources("mini", [estimate], config, shared=False, pairs_file=spec.pairs_file)
    executor = scheduler.make_executor("local", tmp_path / "logs", config, resources, "kd-test")
    job = executor.submit(CellJob(), spec, str(results))
    checkpoint = working_folder(spec) / "checkpoint"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.05)
    (worker,) = _children(job._process.pid)
    time.sleep(1.0)
    os.kill(worker, signal.SIGUSR2)
    assert job.result() == "ran"
    (record,) = load_records(results)[0]
    assert record.attempts == 2 and record.training.resumed_from > 0 and record.training.steps == 400


def test_plan_estimates_a_real_pair_on_a_gpu_from_its_shipped_config() -> None:
    (spec,) = grid(["qwen"], ["hybrid"], [0], {}, RunSpec(pair="", method=""))
    estimate = estimate_cell(spec, "NVIDIA H100 80GB HBM3")
    phases = {p.name: p for p in estimate.phases}
    assert set(phases) == {"supervise", "train", "evaluate", "evaluate_teacher", "evaluate_student_before"}
    assert phases["supervise"].shared and not phases["train"].shared
    # the FLOPs model: 6 x the student's parameters x training tokens (Qwen2.5-1.5B: 1.54e9 parameters)
    assert phases["train"].flops / phases["train"].tokens == pytest.approx(6 * 1.5437e9, rel=1e-3)
    rate = throughput_for("NVIDIA H100 80GB HBM3").train
    assert phases["train"].device_hours == pytest.approx(phases["train"].flops / rate / 3600)
    assert estimate.device_hours == sum(p.device_hours for p in estimate.phases if not p.shared)


def test_every_throughput_figure_names_its_source() -> None:
    for entry in load_throughput().values():
        assert entry.train > 0 and entry.generate > 0
        assert all(len(source) > 20 for source in entry.sources.values())


def test_an_unknown_device_or_a_bad_cluster_config_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="no throughput figures for device 'TPU v5'"):
        throughput_for("TPU v5")
    bad = tmp_path / "cluster.toml"
    bad.write_text('partition = "gpu"\nqueue = "x"\n')
    with pytest.raises(HarnessError, match="unknown key 'queue'"):
        scheduler.load_cluster_config(bad)
    bad.write_text("[pairs.qwen]\ngpu = 8\n")
    with pytest.raises(HarnessError, match=r"\[pairs.qwen\] takes gpus, cpus, mem_gb"):
        scheduler.load_cluster_config(bad)


def test_cell_resources_come_from_the_plan_and_the_cluster_config(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text('partition = "gpu"\naccount = "kd"\ntime_factor = 3.0\n[pairs.qwen]\ngpus = 4\nmem_gb = 200\n')
    config = scheduler.load_cluster_config(path, partition="big")
    assert (config.partition, config.account) == ("big", "kd")
    specs = grid(["qwen"], ["hard", "gkd"], [0], {}, RunSpec(pair="", method=""))
    estimates = [estimate_cell(spec, "NVIDIA H100 80GB HBM3") for spec in specs]
    cell = scheduler.job_resources("qwen", estimates, config, shared=False)
    longest = max(e.device_hours for e in estimates)
    assert (cell.gpus, cell.tasks, cell.mem_gb) == (4, 4, 200)
    assert cell.timeout_min == max(10, -(-60 * longest / 4 * 3.0 // 1))
    shared = scheduler.job_resources("qwen", estimates, config, shared=True, devices=2)
    assert (shared.gpus, shared.tasks) == (2, 1)


def test_status_without_submissions_says_not_submitted(tmp_path: Path) -> None:
    specs = grid(["tiny"], ["sft"], [0, 1], {}, replace(RunSpec(pair="", method=""), limit=2))
    states = scheduler.status(specs, tmp_path)
    assert [(s.cell, s.state) for s in states] == [(cell_name(spec), "not submitted") for spec in specs]
