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
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import torch

from tasks.generation import Completion, Generator


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

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        seed: int = 0,
        n: int = 1,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> list[list[Completion]]:
        kwargs = {"max_new_tokens": max_new_tokens, "temperature": temperature, "stop": stop, "seed": seed, "n": n}
        kwargs |= {"top_p": top_p, "top_k": top_k}
        return self._call("generate", prompts, kwargs)

    def generate_ids(
        self,
        prompt_ids: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> list[list[int]]:
        kwargs = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
        kwargs |= {"top_p": top_p, "top_k": top_k}
        return self._call("generate_ids", prompt_ids, kwargs)

    def generate_topk(
        self,
        prompt_ids: list[list[int]],
        *,
        k: int,
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        top_p: float = 1.0,
        top_k: int = 0,
    ) -> list[Any]:
        kwargs = {"k": k, "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
        kwargs |= {"top_p": top_p, "top_k": top_k}
        return self._call("generate_topk", prompt_ids, kwargs)

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(("close", [], {}))
        for process in self.processes:
            process.join()

    def _call(self, method: str, items: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        """Send worker w the w-th contiguous slice of `items`; their results, concatenated in order."""
        workers = len(self.pipes)
        bounds = [len(items) * w // workers for w in range(workers + 1)]
        for w, pipe in enumerate(self.pipes):
            pipe.send((method, items[bounds[w] : bounds[w + 1]], kwargs))
        answers = [_receive(pipe) for pipe in self.pipes]  # every answer is read, so none is left for the next call
        for w, (status, value) in enumerate(answers):
            if status != "ok":
                raise RuntimeError(f"generation worker {w} of {workers} failed: {value}")
        return [result for _, value in answers for result in value]


def _serve(factory: Callable[[], Generator], pipe: Connection) -> None:
    """A worker: build the generator, then answer (method, items, kwargs) requests until `close`."""
    generator = factory()
    while True:
        method, items, kwargs = pipe.recv()
        if method == "close":
            generator.close()
            return
        try:
            pipe.send(("ok", getattr(generator, method)(items, **kwargs) if items else []))
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
