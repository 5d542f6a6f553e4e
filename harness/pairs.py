"""Teacher-student pairs, read from a versioned TOML file (`harness/pairs.toml`, or `--pairs-file`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from kdcore.errors import HarnessError, unknown_choice

DEFAULT_PAIRS_FILE = Path(__file__).with_name("pairs.toml")
SCHEMA_VERSION = 1
DTYPES = ("float32", "bfloat16", "float16")
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM")


@dataclass(frozen=True)
class Pair:
    name: str
    teacher: str
    student: str
    architecture: str
    tasks: tuple[str, ...]
    train_task: str
    description: str = ""
    dtype: str = "bfloat16"
    max_length: int = 2048
    max_new_tokens: int = 1024
    train_prompts: int = 1000
    chat_template: str = "model"
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults for this pair
    cpu_threads: int | None = None  # torch threads on a CPU-only machine (None: torch's default, one per core)
    gpu_memory_utilization: float | None = None  # vLLM engines' share of a GPU (None: computed from the free memory)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_pair(name: str, entry: Any, source: Path) -> Pair:
    where = f"{source.name}: pair {name!r}"
    if not isinstance(entry, dict):
        raise HarnessError(f"{where} must be a table")
    fields = {f.name: f for f in dataclasses.fields(Pair) if f.name != "name"}
    unknown = set(entry) - set(fields)
    if unknown:
        raise HarnessError(f"{where}: unknown field {sorted(unknown)[0]!r}; valid fields: {', '.join(sorted(fields))}")
    required = [
        n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [n for n in required if n not in entry]
    if missing:
        raise HarnessError(f"{where}: missing field {missing[0]!r}")
    values = dict(entry)
    values["tasks"] = tuple(values["tasks"]) if isinstance(values["tasks"], list) else values["tasks"]
    for key, kind in (("teacher", str), ("student", str), ("train_task", str), ("tasks", tuple)):
        if not isinstance(values[key], kind) or not values[key]:
            raise HarnessError(f"{where}: field {key!r} must be a non-empty {kind.__name__}")
    for key in ("max_length", "max_new_tokens", "train_prompts", "cpu_threads"):
        if key in values and (not isinstance(values[key], int) or values[key] <= 0):
            raise HarnessError(f"{where}: field {key!r} must be a positive integer, got {values[key]!r}")
    share = values.get("gpu_memory_utilization")
    if share is not None and (isinstance(share, bool) or not isinstance(share, float | int) or not 0 < share <= 1):
        raise HarnessError(f"{where}: field 'gpu_memory_utilization' must be a number in (0, 1], got {share!r}")
    if values.get("dtype", "bfloat16") not in DTYPES:
        raise unknown_choice(f"dtype in {where}:", values["dtype"], DTYPES)
    if values["architecture"] not in ARCHITECTURES:
        raise unknown_choice(f"architecture in {where}:", values["architecture"], ARCHITECTURES)
    if values.get("chat_template", "model") not in ("model", "none"):
        raise unknown_choice(f"chat_template in {where}:", values["chat_template"], ("model", "none"))
    return Pair(name=name, **values)


def load_pairs(path: str | Path | None = None) -> dict[str, Pair]:
    """All pairs in `path` (default: the shipped file), validated; a one-line HarnessError otherwise."""
    source = Path(path) if path else DEFAULT_PAIRS_FILE
    try:
        data = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise HarnessError(f"pairs file not found: {source}") from None
    except tomllib.TOMLDecodeError as err:
        raise HarnessError(f"malformed pairs file {source}: {err}") from None
    if data.get("schema_version") != SCHEMA_VERSION:
        raise HarnessError(
            f"{source.name}: schema_version must be {SCHEMA_VERSION}, got {data.get('schema_version')!r}"
        )
    pairs = data.get("pairs")
    if not isinstance(pairs, dict) or not pairs:
        raise HarnessError(f"{source.name}: no [pairs.<name>] tables")
    return {name: _parse_pair(name, entry, source) for name, entry in pairs.items()}


def get_pair(name: str, path: str | Path | None = None) -> Pair:
    pairs = load_pairs(path)
    if name not in pairs:
        raise unknown_choice("pair", name, pairs)
    return pairs[name]
