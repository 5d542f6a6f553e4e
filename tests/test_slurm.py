"""A two-cell sweep through a real Slurm (sbatch, squeue): .ci/slurm-up.sh starts a one-node cluster in CI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.records import load_records
from tests.scheduled import mini_pairs_file, sweep


def _slurm_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(state in out.stdout for state in ("idle", "mix", "alloc"))


NO_SLURM = "no Slurm cluster answers (CI starts one: .ci/slurm-up.sh)"
pytestmark = pytest.mark.skipif(not _slurm_answers(), reason=NO_SLURM)


def _printed(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.mark.slow
def test_a_two_cell_sweep_runs_through_sbatch(own_tiny_cache, tmp_path: Path, monkeypatch, capsys) -> None:
    results, pairs = tmp_path / "results", mini_pairs_file(tmp_path)
    common = ("--pairs", "mini", "--methods", "sft,hard", "--seeds", "0", "--max-steps", "5", "--limit", "5")
    common += ("--pairs-file", str(pairs), "--results-dir", str(results))
    assert sweep(monkeypatch, *common, "--executor", "slurm") == 0
    out = _printed(capsys)
    assert "2 cells submitted" in out and "array" in out
    assert sweep(monkeypatch, *common, "--status") == 0
    out = _printed(capsys)  # the scheduler holds both cells' jobs (the pair job runs first)
    assert out.count(" pending ") + out.count(" running ") == 2

    assert sweep(monkeypatch, *common, "--executor", "slurm", "--wait") == 0  # live jobs: nothing submitted
    out = _printed(capsys)
    assert "0 cells submitted, 2 not submitted" in out and "2 done" in out
    records, problems = load_records(results)
    assert sorted(r.method for r in records) == ["hard", "sft"] and not problems
    ledger = [json.loads(p.read_text()) for p in (results / "jobs" / "cells").glob("*.json")]
    assert {entry["executor"] for entry in ledger} == {"slurm"} and all("_" in e["job_id"] for e in ledger)
    board = (results / "leaderboard.md").read_text()  # written by the leaderboard job after the array
    assert "sft" in board and "hard" in board

    assert sweep(monkeypatch, *common, "--executor", "slurm") == 0
    assert "0 cells submitted, 2 not submitted" in _printed(capsys)
