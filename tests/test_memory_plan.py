"""The device memory plan's settings: a vLLM engine's GPU share is computed from the memory free when it starts (or
set by the pair / --gpu-memory-utilization), never vLLM's default, and its log-probs mode is set to the raw one; the
options every pipeline command shares reach the run's spec from `run` and `sweep` alike.

The engine's arguments are read from a stand-in `vllm` module, so this runs without vLLM or a GPU."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from harness import sweep
from harness.cli import main
from harness.pairs import load_pairs
from kdcore.errors import HarnessError
from tasks import vllm_backend


class FakeLLM:
    """Records the engine arguments `VLLMGenerator` starts vLLM with."""

    started: ClassVar[list[dict]] = []

    def __init__(self, **kwargs) -> None:
        FakeLLM.started.append(kwargs)
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(get_vocab_size=lambda: 100))

    def get_tokenizer(self):
        return None


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """A GPU of 140 GiB with 100 GiB free, and a stand-in vLLM."""
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (100 << 30, 140 << 30))
    FakeLLM.started = []
    return FakeLLM.started


def test_engine_share_is_what_is_free_at_start_less_a_margin(fake_gpu: list[dict]) -> None:
    vllm_backend.VLLMGenerator("m")
    (kwargs,) = fake_gpu
    assert kwargs["gpu_memory_utilization"] == pytest.approx((100 - 1) / 140, abs=0.01)
    assert kwargs["gpu_memory_utilization"] * 140 <= 99  # vLLM refuses a share above the free memory
    assert kwargs["logprobs_mode"] == "raw_logprobs"
    vllm_backend.VLLMGenerator("m", gpu_memory_utilization=0.3)
    assert fake_gpu[1]["gpu_memory_utilization"] == 0.3


def test_too_little_free_memory_is_one_line(fake_gpu: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (2 << 30, 140 << 30))
    with pytest.raises(HarnessError, match=r"only 2.0 of 140.0 GiB of GPU memory are free for a vLLM engine"):
        vllm_backend.VLLMGenerator("m")


def test_pair_share_is_validated(tmp_path: Path) -> None:
    entry = '[pairs.p]\nteacher = "t"\nstudent = "s"\narchitecture = "LlamaForCausalLM"\ntasks = ["arith"]\n'
    path = tmp_path / "pairs.toml"
    path.write_text(f'schema_version = 1\n{entry}train_task = "arith"\ngpu_memory_utilization = 0.45\n')
    assert load_pairs(path)["p"].gpu_memory_utilization == 0.45
    path.write_text(f'schema_version = 1\n{entry}train_task = "arith"\ngpu_memory_utilization = 1.5\n')
    with pytest.raises(HarnessError, match=r"field 'gpu_memory_utilization' must be a number in \(0, 1\], got 1.5"):
        load_pairs(path)


SHARED = ["--lora-r", "4", "--teacher-signal", "online", "--top-k", "8", "--backend", "transformers"]
SHARED += ["--gpu-memory-utilization", "0.5", "--max-steps", "3", "--limit", "2", "--div", "jsd"]


def test_run_and_sweep_share_their_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    specs = []
    monkeypatch.setattr("harness.pipeline.run", lambda spec: specs.append(spec))
    monkeypatch.setattr(sweep, "run_sweep", lambda cells, results: specs.extend(cells) or sweep.SweepResult())
    monkeypatch.setattr("harness.results.build.build_leaderboard", lambda results: [])
    for command in (["run", "--method", "soft"], ["sweep", "--methods", "soft"]):
        monkeypatch.setattr(sys, "argv", ["harness", *command, *SHARED, "--results-dir", str(tmp_path)])
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 0
    ran, swept = specs
    assert ran == swept  # the same spec from either command
    assert ran.train_overrides == {"lora_r": 4, "max_steps": 3} and ran.method_params == {"divergence": "jsd"}
    assert (ran.teacher_signal, ran.top_k, ran.execution.backend, ran.execution.gpu_memory_utilization) == (
        "online",
        8,
        "transformers",
        0.5,
    )
