"""Shared pieces of the benchmark scripts: the settings line, interleaved repetitions, medians, ratios, random models.

Every script prints one `settings:` line first (so a figure can be traced to what produced it), runs its
competitors interleaved (the machine is shared: a slow patch then hits every competitor, not one) and reports
medians over repetitions.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parent.parent


def configure(threads: int = 1) -> None:
    """Pin torch's intra-op threads (the cores are shared) and silence the harness's progress bars."""
    torch.set_num_threads(threads)
    os.environ.setdefault("HARNESS_NO_PROGRESS", "1")


def print_settings(**settings: Any) -> None:
    """One `settings:` line: the script's own settings plus the machine and library versions."""
    machine = {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print("settings: " + " ".join(f"{k}={v}" for k, v in {**settings, **machine}.items()), flush=True)


def interleaved(competitors: dict[str, Callable[[], list[Any]]], reps: int) -> dict[str, list[Any]]:
    """Run each competitor `reps` times, rotating who goes first, and collect the samples each run returns."""
    names = list(competitors)
    samples: dict[str, list[Any]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].extend(competitors[name]())
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """`median [min, max]` of a sample, for showing how noisy a shared machine was."""
    return f"{median(values):.3g} [{min(values):.3g}, {max(values):.3g}]"


class StepClock:
    """Wall and CPU timestamps at the start of every step (and once at the end), giving per-step times.

    CPU time is this process's (all its threads); with one torch thread on a machine whose cores other jobs share,
    it is the steadier measure of work done, while wall time also counts the time the scheduler gave to others.
    """

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []

    def tick(self) -> None:
        self.stamps.append((time.perf_counter(), time.process_time()))

    def step_seconds(self, skip: int = 1) -> list[tuple[float, float]]:
        """(wall, cpu) seconds between consecutive ticks, dropping the first `skip` steps (lazy set-up, caches)."""
        steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.stamps[:-1], self.stamps[1:], strict=True)]
        return steps[skip:]


def random_llama(
    vocab: int, hidden: int, layers: int, heads: int, intermediate: int, *, seed: int = 0, max_positions: int = 512
) -> LlamaForCausalLM:
    """A random-initialised Llama model built offline from its config (untied head, like the large pairs)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def child_env() -> dict[str, str]:
    """The environment of a benchmark's worker child: this repository first on the path, no hub, no progress bars,
    and vLLM's CPU OpenMP threads bound to one core (`VLLM_CPU_OMP_THREADS_BIND`, default core 0) to match the one
    torch thread of the transformers side."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0"),
        "HARNESS_NO_PROGRESS": "1",
    }


class ChildFailed(RuntimeError):
    """A worker child exited with an error; the message is the last error line of its stderr."""


def run_child(script: Path, python: str, job: dict, folder: Path, env: dict[str, str]) -> dict:
    """Run `python script --worker JOB` in a fresh process, JOB a JSON file holding `job` plus the path `out` the
    worker writes its report to (with `ready`, the `time.time()` at which its backend was ready). Returns that report
    plus `startup` (seconds from launch to ready) and `child_cpu` (CPU seconds of the child and all its processes)."""
    job_path = folder / f"{job['backend']}.json"
    job = {**job, "out": str(folder / f"{job['backend']}.out.json")}
    job_path.write_text(json.dumps(job))
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    done = subprocess.run(
        [python, str(script), "--worker", str(job_path)], cwd=REPO, env=env, capture_output=True, text=True
    )
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        lines = done.stderr.splitlines()
        # the root cause, not vLLM's "EngineDeadError" that follows it
        errors = [line for line in lines if "Error:" in line and "EngineDead" not in line] or lines[-1:]
        raise ChildFailed(f"exit code {done.returncode}; {errors[0].split('] ')[-1] if errors else 'no stderr'}")
    report = json.loads(Path(job["out"]).read_text())
    report["startup"] = report["ready"] - start
    report["child_cpu"] = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
    return report
