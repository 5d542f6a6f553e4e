"""Data-parallel generation: N copies of a generator, each in its own process on its own GPUs, sharing every call.

vLLM's offline `LLM` class does not take `data_parallel_size` in one process; its recipe is one engine per
process, each on its own devices and its own slice of the prompts. `DataParallelGenerator` does that behind
the `Generator` interface: worker w sees GPUs [w * d, (w + 1) * d) of this process's visible devices (d =
`devices_per_worker`, the tensor-parallel size), and each call's prompts are split into contiguous slices,
one per worker, whose results are put back in order.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import torch

from tasks.generation import Completion, Generator
from tasks.protocol import Sampling


class DataParallelGenerator:
    """`workers` generators made by `factory` (picklable, e.g. a `functools.partial`), one process each."""

    def __init__(self, factory: Callable[[], Generator], workers: int, devices_per_worker: int = 1) -> None:
        context = multiprocessing.get_context("spawn")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        if gpus and len(gpus) < workers * devices_per_worker:
            raise ValueError(f"{workers} x {devices_per_worker} GPUs asked, {len(gpus)} visible")
        self.devices = workers * devices_per_worker
        self.backend = "vllm"
        self.pipes: list[Connection] = []
        self.processes = []
        for worker in range(workers):
            mine, theirs = context.Pipe()
            if gpus:  # a spawned process starts with the environment as it is at start()
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(
                    gpus[worker * devices_per_worker : (worker + 1) * devices_per_worker]
                )
            process = context.Process(target=_serve, args=(factory, theirs), daemon=True)
            process.start()
            self.pipes.append(mine)
            self.processes.append(process)
        if gpus:
            _restore("CUDA_VISIBLE_DEVICES", visible)

    def generate(self, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        return self._call("generate", prompts, (sampling,), {})

    def generate_ids(self, prompt_ids: list[list[int]], sampling: Sampling) -> list[list[int]]:
        return self._call("generate_ids", prompt_ids, (sampling,), {})

    def generate_topk(self, prompt_ids: list[list[int]], sampling: Sampling, *, k: int) -> list[Any]:
        return self._call("generate_topk", prompt_ids, (sampling,), {"k": k})

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(("close", [], (), {}))
        for process in self.processes:
            process.join()

    def _call(self, method: str, items: list[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        """Send worker w the w-th contiguous slice of `items`; their results, concatenated in order."""
        workers = len(self.pipes)
        bounds = [len(items) * w // workers for w in range(workers + 1)]
        for w, pipe in enumerate(self.pipes):
            pipe.send((method, items[bounds[w] : bounds[w + 1]], args, kwargs))
        answers = [_receive(pipe) for pipe in self.pipes]  # every answer is read, so none is left for the next call
        for w, (status, value) in enumerate(answers):
            if status != "ok":
                raise RuntimeError(f"generation worker {w} of {workers} failed: {value}")
        return [result for _, value in answers for result in value]


def _serve(factory: Callable[[], Generator], pipe: Connection) -> None:
    """A worker: build the generator, then answer (method, items, args, kwargs) requests until `close`."""
    generator = factory()
    while True:
        method, items, args, kwargs = pipe.recv()
        if method == "close":
            generator.close()
            return
        try:
            pipe.send(("ok", getattr(generator, method)(items, *args, **kwargs) if items else []))
        except Exception as err:  # reported to the caller, which raises it; the worker stays up
            pipe.send(("error", "".join(traceback.format_exception_only(err)).strip()))


def _receive(pipe: Connection) -> tuple[str, Any]:
    try:
        return pipe.recv()
    except EOFError:
        return "error", "its process exited (see its output above)"


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
