"""The measured cost of one phase (wall time, devices, tokens, FLOPs, peak memory): the small type the
training loop, the generators and the run's ledger (harness.accounting) share."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass

import torch


def device_kind() -> str:
    """'cpu', or the GPU's name (e.g. 'NVIDIA H100 80GB HBM3')."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def peak_memory_bytes() -> int:
    """Peak accelerator memory when on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


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

    def add_work(self, tokens: int, params: int, flops_per_param_token: int) -> None:
        """Count `tokens` processed by a model of `params` parameters (6 for training, 2 for inference)."""
        self.tokens += int(tokens)
        self.flops += float(flops_per_param_token) * params * tokens


def timed(cost: PhaseCost, start: float) -> PhaseCost:
    """`cost` with the wall time since `start` added, and its device-hours and peak memory updated."""
    cost.wall_s += time.perf_counter() - start
    cost.device_hours = cost.wall_s * cost.devices / 3600.0
    cost.peak_memory_bytes = peak_memory_bytes()
    return cost
