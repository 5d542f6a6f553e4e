"""bench/gpu_dry_run.py's CPU-side parts: the per-phase table (MFU from the record's FLOPs and wall time) and the
whole entry point at `--scale small` on the transformers backend."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench import gpu_dry_run
from harness.record_parts import RunCost
from kdcore.costs import PhaseCost


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """The real pairs train in bf16 mixed precision; accelerate keeps one process-wide state and refuses another
    precision once set (as an earlier test in the same worker may have), so each test starts and ends clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_mfu_is_flops_over_wall_devices_and_peak() -> None:
    phase = {"wall_s": 2.0, "devices": 4, "tokens": 1000, "flops": 8e15, "peak_memory_bytes": 3 * 2**30}
    cost = RunCost({"train": PhaseCost(**phase, reused=False), "supervise": PhaseCost(**phase, reused=True)})
    train, supervise = gpu_dry_run.phase_rows(cost, peak_tflops=1000.0)
    assert train["mfu"] == pytest.approx(8e15 / (2.0 * 4 * 1000e12)) == pytest.approx(1.0)
    assert train["tokens_per_s"] == 500 and train["peak_gib"] == 3
    assert supervise["mfu"] is None and supervise["tokens_per_s"] is None  # a cached phase did no work now
    table = gpu_dry_run.format_rows([train, supervise])
    assert "100.0%" in table and "(cached)" in table


@pytest.mark.slow
def test_entry_point_at_small_scale_on_cpu(tmp_path: Path, monkeypatch, capsys) -> None:
    args = ["--pair", "deepseek-coder", "--scale", "small", "--backend", "transformers", "--prompts", "2"]
    args += ["--steps", "1", "--batch-size", "2", "--max-new-tokens", "4", "--eval-max-new-tokens", "4"]
    args += ["--limit", "1", "--results-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["gpu_dry_run", *args])
    gpu_dry_run.main()
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["supervise"], ["train"])
    }
    assert set(rows) == {"supervise", "train"} and int(rows["train"][2]) > 0
    assert "record: " in out and list((tmp_path / "runs").glob("*.json"))
