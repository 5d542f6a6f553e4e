"""The embedded tiny pair: built offline, cached, deterministic; `harness run --pair tiny` end to end.

A miniature spec (`mini_tiny` in conftest: a few training steps) stands in for the default so the tests take
seconds; the default spec's scores are measured by the README's main command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness import tiny
from harness.cli import main
from harness.models import resolve


def test_tiny_pair_is_cached_and_deterministic(mini_tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tiny.ensure_tiny_pair()
    assert resolve("builtin:tiny/teacher") == str(first / "teacher")
    assert tiny.ensure_tiny_pair() == first  # cached: no rebuild
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "other-cache"))
    second = tiny.ensure_tiny_pair()
    assert second != first
    for role in ("teacher", "student"):
        a, b = load_file(first / role / "model.safetensors"), load_file(second / role / "model.safetensors")
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    teacher_params = sum(t.numel() for t in load_file(first / "teacher" / "model.safetensors").values())
    student_params = sum(t.numel() for t in load_file(first / "student" / "model.safetensors").values())
    assert student_params < teacher_params


METHOD_ARGS = {"gkd": ["--param", "lmbda=1"], "hybrid-gkd": ["--param", "lmbda=1"], "soft": ["--div", "jsd"]}


@pytest.mark.parametrize("method", ["sft", "hard", "soft", "hybrid", "gkd", "hybrid-gkd"])
def test_harness_run_tiny_end_to_end(mini_tiny, method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    args = ["run", "--method", method, "--pair", "tiny", "--max-steps", "2", "--limit", "4"]
    monkeypatch.setattr(sys, "argv", ["harness", *args, "--results-dir", str(results), *METHOD_ARGS.get(method, [])])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    (record_path,) = (results / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["method"] == method and record["scores"]["arith"]["n"] == 4
    if method.endswith("gkd"):  # on-policy: every micro-batch was sampled by the student itself (lmbda=1)
        assert record["training"]["on_policy_batches"] == 2
    if method == "sft":  # no teacher: no supervision phase
        assert "supervise" not in record["cost"]["phases"]
    if method.endswith("gkd"):  # on-policy: every micro-batch was sampled by the student itself (lmbda=1)
        assert record["training"]["on_policy_batches"] == 2
    if method == "sft":  # no teacher: no supervision phase
        assert "supervise" not in record["cost"]["phases"]
    assert record["cost"]["phases"]["train"]["device_hours"] > 0
    samples = (results / record["scores"]["arith"]["samples"]).read_text().splitlines()
    assert len(samples) == 4 and {"prompt", "completion", "score"} <= set(json.loads(samples[0]))
    board = (results / "leaderboard.md").read_text()
    assert method in board
    if method == "hybrid":  # colour the run's outputs by the teacher-estimated bridge risk
        rows = [json.loads(line) for line in samples]
        rows[0]["completion"] = "2 + 3 = 5\n#### 5"  # a mini student may stop at once; make one output non-empty
        (results / record["scores"]["arith"]["samples"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
        monkeypatch.setattr(
            sys,
            "argv",
            [
                "harness",
                "analyze",
                "--pair",
                "tiny",
                "--run",
                str(record_path),
                "--results-dir",
                str(results),
                "--out",
                str(tmp_path / "analysis"),
                "--limit",
                "2",
            ],
        )
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 0
        page = (tmp_path / "analysis" / f"{record_path.stem}-risk.html").read_text()
        assert page.count("arith #") == sum(1 for row in rows[:2] if row["completion"]) >= 1


def test_lora_run_saves_a_merged_student(mini_tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    args = ["run", "--method", "hybrid", "--pair", "tiny", "--max-steps", "3", "--limit", "2", "--lora-r", "4"]
    monkeypatch.setattr(sys, "argv", ["harness", *args, "--lr", "0.05", "--results-dir", str(results)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    (record_path,) = (results / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["train_config"]["lora_r"] == 4
    trained = load_file(results / "models" / record["run_id"] / "model.safetensors")
    initial = load_file(tiny.ensure_tiny_pair() / "student" / "model.safetensors")
    assert trained.keys() == initial.keys()  # merged: a plain model, no adapter weights
    changed = [k for k in initial if not torch.equal(initial[k], trained[k])]
    assert changed and all("embed" not in k and "norm" not in k for k in changed)  # only the linear layers moved
