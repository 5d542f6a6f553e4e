"""Distributed training on CPU: 2 processes (torchrun, gloo) give the loss curve of 1 process with the same global
batch, and `harness run` under torchrun writes one record, charged for both processes.

Tolerance: the 2-process run sums the same per-row terms in a different order (two partial sums, then an
all-reduce of the loss sums and of the gradients), so the curves may differ by float32 rounding only, ~1e-7
relative. We allow 1e-5. A real difference in what the processes compute shows up far above that: advancing
the learning-rate schedule once per process instead of once per step (accelerate's default for scheduler
stepping) moved the curve by 8e-5 at step 3 and by 4% at step 7.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main
from tests.tiny_training import DDP_CONFIG, train_tiny

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-5


def torchrun(*args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path: Path) -> None:
    torchrun("tests.tiny_training", str(tmp_path / "two"))
    one = train_tiny(tmp_path / "one")
    two = json.loads((tmp_path / "two" / "history.json").read_text())
    assert len(one) == len(two) == DDP_CONFIG.max_steps
    for step_one, step_two in zip(one, two, strict=True):
        assert step_two["loss"] == pytest.approx(step_one["loss"], rel=RTOL)
    assert one[-1]["loss"] < one[0]["loss"]  # it did learn something
    weights_one, weights_two = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    assert weights_one.keys() == weights_two.keys()
    assert all(torch.allclose(weights_one[k], weights_two[k], rtol=RTOL, atol=1e-6) for k in weights_one)


@pytest.mark.slow
def test_harness_run_under_torchrun_writes_one_record(mini_tiny, tmp_path: Path, monkeypatch) -> None:
    args = ["run", "--method", "hybrid", "--max-steps", "4", "--limit", "4"]
    monkeypatch.setattr(sys, "argv", ["harness", *args, "--results-dir", str(tmp_path / "one")])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    torchrun("tests.mini_cli", *args, "--results-dir", str(tmp_path / "two"))

    (one,) = [json.loads(p.read_text()) for p in (tmp_path / "one" / "runs").glob("*.json")]
    (two,) = [json.loads(p.read_text()) for p in (tmp_path / "two" / "runs").glob("*.json")]
    assert two["environment"]["device_count"] == 2 and two["cost"]["phases"]["train"]["devices"] == 2
    assert two["cost"]["phases"]["train"]["tokens"] == one["cost"]["phases"]["train"]["tokens"]  # both processes
    curves = [
        [json.loads(line)["loss"] for line in (root / r["training"]["log"]).read_text().splitlines()]
        for root, r in ((tmp_path / "one", one), (tmp_path / "two", two))
    ]
    assert curves[1] == pytest.approx(curves[0], rel=RTOL) and len(curves[0]) == 4
    samples = (tmp_path / "two" / two["scores"]["arith"]["samples"]).read_text().splitlines()
    assert [json.loads(line)["doc_id"] for line in samples] == [0, 1, 2, 3]  # the processes' shards, merged
    assert two["scores"]["arith"]["n"] == 4 and two["teacher_scores"] == one["teacher_scores"]


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_load(name: str, kind: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "harness" / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.name == kind and config.num_processes == 8
    if name == "zero3":
        assert config.deepspeed_config["zero_stage"] == 3
    if name == "fsdp":
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"ACCELERATE_USE_FSDP": "true"}, "the launch asks for FSDP but no GPU is visible: accelerate would train"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "the launch asks for DeepSpeed but no GPU is visible: accelerate"),
    ],
)
def test_sharded_training_accelerate_would_drop_on_cpu_is_refused_before_anything_loads(
    tmp_path: Path, monkeypatch, capsys, environment: dict[str, str], message: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["harness", "run", "--method", "hard", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert done.value.code == 2 and message in out and len(out.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written


def test_sharded_training_is_accepted_where_accelerate_honours_it(monkeypatch) -> None:
    from harness.launch import check_sharding
    from kdcore.errors import HarnessError

    check_sharding()  # nothing asked: nothing to check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(HarnessError, match="no accelerate launch or torchrun started this process"):
        check_sharding()
    monkeypatch.setenv("LOCAL_RANK", "0")
    check_sharding()  # a GPU launch by torchrun: accelerate shards
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # accelerate launch --cpu
    with pytest.raises(HarnessError, match="the launch forces the CPU"):
        check_sharding()
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.delenv("LOCAL_RANK")
    check_sharding()  # DeepSpeed on a GPU needs no launcher's rank (accelerate runs it in one process)
