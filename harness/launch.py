"""Several processes or machines: which slice of the work is this process's, and which process writes.

Training runs under `accelerate launch` or `torchrun` (they set `RANK` and `WORLD_SIZE`); every process trains
its share of each batch, and only the main process (rank 0) writes records, caches and leaderboards.
Generation (teacher supervision, evaluation) is split into shards: `--shard i/n` on machine i of n, or the
process's rank of the launch's world size; the shards are merged into one cache or one score.
"""

from __future__ import annotations

import os
from typing import Any

from kdcore.errors import HarnessError


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`"i/n"` -> `(i, n)` with 0 <= i < n; None for None."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    if sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count):
        return int(index), int(count)
    raise HarnessError(f"malformed --shard {text!r}; expected i/n with 0 <= i < n, e.g. 0/4")


def world_size() -> int:
    """Processes in this launch (1 when not launched by accelerate or torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def init() -> None:
    """Join the launch's process group, on this process's own GPU (a no-op for a single process)."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def broadcast(value: Any) -> Any:
    """The main process's `value`, on every process (picklable values)."""
    if world_size() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


SHARDED = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}  # what accelerate launch exports


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def check_sharding() -> None:
    """Refuse sharded training (FSDP or DeepSpeed, as `accelerate launch --config_file fsdp.yaml | zero3.yaml`
    exports it) that accelerate would silently replace with unsharded training (DDP, or one plain process).

    As accelerate 1.15 decides (`AcceleratorState`, `PartialState._prepare_backend`): neither is used when the
    training loop's Accelerator runs on CPU, which it does without a GPU (`cpu=not torch.cuda.is_available()`) or
    under `--cpu` (ACCELERATE_USE_CPU); FSDP is also dropped in a process not started by torchrun / accelerate
    launch (no LOCAL_RANK). tests/test_sharded_training.py pins the CPU case down."""
    asked = [name for variable, name in SHARDED.items() if _flag(variable)]
    if not asked:
        return
    import torch

    why = None
    if not torch.cuda.is_available():
        why = "no GPU is visible"
    elif _flag("ACCELERATE_USE_CPU"):
        why = "the launch forces the CPU (--cpu)"
    elif asked == ["FSDP"] and "LOCAL_RANK" not in os.environ:
        why = "no accelerate launch or torchrun started this process"
    if why is not None:
        raise HarnessError(
            f"the launch asks for {' and '.join(asked)} but {why}: accelerate would train unsharded; use ddp.yaml"
        )


def part() -> tuple[int, int]:
    """This process's slice of shared work: (rank, world size)."""
    return rank(), world_size()


def barrier() -> None:
    """Wait until every process of the launch gets here (no-op for a single process)."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
