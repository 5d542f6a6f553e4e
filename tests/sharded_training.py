"""`torchrun --nproc-per-node 2 -m tests.sharded_training OUT` with accelerate's FSDP or DeepSpeed environment: the
tiny training of tests.tiny_training under a sharded launch, writing to OUT/history.json its loss history and
what the launch really did (the distributed type accelerate chose, the prepared module's class, whether its
parameters are sharded DTensors), recorded as the training loop prepares the model."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

import trainers.loop
from tests.tiny_training import train_tiny

USED: dict[str, object] = {}


class RecordingAccelerator(Accelerator):
    """accelerate's Accelerator, noting what `prepare` made of the model."""

    def prepare(self, *args, **kwargs):
        from torch.distributed.tensor import DTensor

        prepared = super().prepare(*args, **kwargs)
        model = prepared[0]
        USED.update(
            distributed_type=self.distributed_type.name,
            num_processes=self.num_processes,
            module=type(model).__name__,
            sharded_parameters=sum(isinstance(p, DTensor) for p in model.parameters()),
            parameters=sum(1 for _ in model.parameters()),
        )
        return prepared


if __name__ == "__main__":
    torch.set_num_threads(1)
    trainers.loop.Accelerator = RecordingAccelerator
    out = Path(sys.argv[1])
    history = train_tiny(out)
    if USED.get("num_processes", 1) == 1 or torch.distributed.get_rank() == 0:
        (out / "history.json").write_text(json.dumps({"history": history, "used": USED}))
