"""The FSDP config on CPU: what a 2-process launch with it really does.

torch's FSDP2 (`fully_shard`) runs on CPU with gloo, but accelerate 1.15 only switches to FSDP when the launch's
distributed type is a GPU-like one (MULTI_GPU, MULTI_XPU, ... in `AcceleratorState.__init__`); on CPU the type is
MULTI_CPU and the FSDP settings are ignored without a warning: the student is wrapped in DDP. This test pins that
down (so a later accelerate that shards on CPU shows up here) and checks the curve still equals one process's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_training import DDP_CONFIG, train_tiny

ROOT = Path(__file__).resolve().parents[1]


def fsdp_environment() -> dict[str, str]:
    """The variables `accelerate launch --config_file harness/configs/accelerate/fsdp.yaml` exports."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "harness" / "configs" / "accelerate" / "fsdp.yaml"))
    return {"ACCELERATE_USE_FSDP": "true", **{key.upper(): str(v) for key, v in config.fsdp_config.items()}}


@pytest.mark.slow
def test_fsdp_config_on_cpu_trains_unsharded_like_one_process(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, **fsdp_environment(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*command, "-m", "tests.sharded_training", str(tmp_path / "two")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "history.json").read_text())
    assert two["used"]["num_processes"] == 2
    assert two["used"]["distributed_type"] == "MULTI_CPU" and two["used"]["module"] == "DistributedDataParallel"
    assert two["used"]["sharded_parameters"] == 0  # nothing sharded: accelerate ignored the FSDP settings
    one = train_tiny(tmp_path / "one")
    assert len(two["history"]) == len(one) == DDP_CONFIG.max_steps
    assert [s["loss"] for s in two["history"]] == pytest.approx([s["loss"] for s in one], rel=1e-5)
