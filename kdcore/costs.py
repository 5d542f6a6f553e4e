"""The measured cost of one phase (wall time, devices, tokens, FLOPs, peak memory): the small type the
training loop, the generators and the run's ledger (harness.accounting) share."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch


def device_kind() -> str:
    """'cpu', or the GPU's name (e.g. 'NVIDIA H100 80GB HBM3')."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def cpu_kernels() -> str:
    """The CPU kernels torch dispatches to here ('AVX512', 'AVX2', 'DEFAULT', ...): float results can differ in
    their last bits between two, and a trained model's scores with them."""
    return torch.backends.cpu.get_cpu_capability()


HWM_FILE = Path("/proc/self/status")  # Linux: VmHWM, the peak resident set size since the last reset
CLEAR_REFS = Path("/proc/self/clear_refs")  # Linux: writing "5" resets VmHWM to the current resident set size


def reset_peak_memory() -> None:
    """Start a new peak: of accelerator memory on GPU, else (on Linux) of the process's resident set size."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the peak stays the process's peak so far
        CLEAR_REFS.write_text("5")


def peak_memory_bytes() -> int:
    """Peak accelerator memory allocated by this process since `reset_peak_memory` when on GPU; else the process's
    peak resident set size since then (Linux; elsewhere since the process started)."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    try:
        for line in HWM_FILE.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def device_memory_in_use() -> int:
    """Bytes in use on this process's GPU by every process (vLLM's engine runs in its own); 0 without a GPU."""
    if not torch.cuda.is_available():
        return 0
    free, total = torch.cuda.mem_get_info()
    return int(total - free)


@dataclass
class PhaseCost:
    """The measured cost of one phase."""

    wall_s: float = 0.0
    devices: int = 1
    device: str = "cpu"
    device_hours: float = 0.0
    tokens: int = 0
    flops: float = 0.0
    peak_memory_bytes: int = 0
    reused: bool = False
    cache_key: str | None = None
    backend: str | None = (
        None  # what did the phase's work: "vllm", "transformers" (generation), "accelerate" (training)
    )

    def add_work(self, tokens: int, params: int, flops_per_param_token: int) -> None:
        """Count `tokens` processed by a model of `params` parameters (6 for training, 2 for inference)."""
        self.tokens += int(tokens)
        self.flops += float(flops_per_param_token) * params * tokens


def timed(cost: PhaseCost, start: float) -> PhaseCost:
    """`cost` with the wall time since `start` added, and its device-hours and peak memory (the larger of the one it
    has and `peak_memory_bytes()`) updated."""
    cost.wall_s += time.perf_counter() - start
    cost.device_hours = cost.wall_s * cost.devices / 3600.0
    cost.peak_memory_bytes = max(cost.peak_memory_bytes, peak_memory_bytes())
    return cost
