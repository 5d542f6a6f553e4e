"""The generation backends by name (one registry), and the factory that builds a generator on one of them."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from kdcore.errors import HarnessError, unknown_choice
from kdcore.registry import Registry
from tasks.generation import Engine, Generator, LoadModel
from tasks.transformers_backend import TransformersGenerator

BackendFactory = Callable[[str, LoadModel, Engine], Generator]  # (model_ref, load, engine) -> generator
BACKENDS: Registry[BackendFactory] = Registry("backend")
AUTO = "auto"  # vLLM when it is installed and a GPU is present, else transformers
DEFAULT_ENGINE = Engine()


def backend_choices() -> list[str]:
    return [AUTO, *BACKENDS.names()]


def resolve_backend(backend: str) -> str:
    """A registered backend: `auto` is vLLM when it is installed and a GPU is present, else transformers."""
    if backend != AUTO and backend not in BACKENDS:
        raise unknown_choice("backend", backend, backend_choices())
    if backend == AUTO:
        return "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "transformers"
    return backend


@BACKENDS.register("transformers")
def transformers_generator(model_ref: str, load: LoadModel, engine: Engine) -> Generator:
    """Generation with the HF model `load()` gives, in this process (the model is loaded as given: `model_ref`,
    `dtype`, `seed` and the memory share are vLLM's)."""
    if engine.tensor_parallel > 1 or engine.data_parallel > 1:
        raise HarnessError(
            f"--tensor-parallel {engine.tensor_parallel} / --data-parallel {engine.data_parallel} need vLLM: pass "
            "--backend vllm on a machine with vLLM and GPUs"
        )
    model, tokenizer = load()
    return TransformersGenerator(model, tokenizer, vocab_rows=engine.vocab_rows)


@BACKENDS.register("vllm")
def vllm_generator(model_ref: str, load: LoadModel, engine: Engine) -> Generator:
    """A vLLM engine for `model_ref` (a folder or hub id), `data_parallel` of them in processes of their own; no HF
    model is loaded in this process."""
    from functools import partial

    from tasks.parallel import DataParallelGenerator
    from tasks.vllm_backend import VLLMGenerator

    build = partial(
        VLLMGenerator,
        model_ref,
        dtype=engine.dtype,
        seed=engine.seed,
        vocab_rows=engine.vocab_rows,
        tensor_parallel=engine.tensor_parallel,
        gpu_memory_utilization=engine.gpu_memory_utilization,
    )
    if engine.data_parallel > 1:
        return DataParallelGenerator(build, engine.data_parallel, devices_per_worker=engine.tensor_parallel)
    return build()


def make_generator(
    model_ref: str, load: LoadModel, *, backend: str = AUTO, engine: Engine = DEFAULT_ENGINE
) -> Generator:
    """A generator on `backend` (see `resolve_backend`), built by its registered factory with `engine`'s settings.
    transformers: `load()` gives the HF model and tokenizer it generates with (called only for this backend). vLLM: an
    engine for `model_ref` (a folder or hub id)."""
    return BACKENDS[resolve_backend(backend)](model_ref, load, engine)
