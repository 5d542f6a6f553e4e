"""Teacher-student pairs, read from a versioned TOML file (`harness/pairs.toml`, or `--pairs-file`).

Besides the models, a pair holds how they are decoded: `evaluation` and `supervision` (`GenerationSettings`, each
value with its source), the teacher-trace filter, and the published scores `harness verify` checks against.
Everything is validated at load, with one-line errors naming the pair and field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from harness.trace_filter import TraceFilter
from kdcore.errors import HarnessError, unknown_choice
from kdcore.train_settings import check_train_settings, is_integer
from tasks.protocol import GenerationSettings, parse_settings

DEFAULT_PAIRS_FILE = Path(__file__).with_name("pairs.toml")
SCHEMA_VERSION = 1
ROLES = ("teacher", "student")
TABLES = ("evaluation", "supervision", "published")  # parsed apart from the plain fields
# What a pair's supervision table starts from: hard labels are teacher samples at temperature 1.
HARD_LABEL_DEFAULTS = GenerationSettings(
    temperature=1.0,
    sources={
        "temperature": "default: hard labels are teacher samples at temperature 1, as the Bridge-Garden paper "
        "defines them (0 = greedy, sequence-level KD's usual choice)"
    },
)


@dataclass(frozen=True)
class Published:
    """A score a model card or report gives for one of the pair's models, with where and how it was measured.

    `score` is a fraction in [0, 1] of `metric` (default: the task's primary metric) on `task`'s test set."""

    model: str  # "teacher" or "student"
    task: str
    score: float
    source: str
    protocol: str
    metric: str | None = None


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
    dev_prompts: int = 0  # train-task docs after the training prompts, held out for `harness tune` (0: none)
    chat_template: str = "model"
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults for this pair
    cpu_threads: int | None = None  # torch threads on a CPU-only machine (None: torch's default, one per core)
    evaluation: GenerationSettings = field(default_factory=GenerationSettings)
    supervision: GenerationSettings = field(default_factory=GenerationSettings)
    trace_filter: TraceFilter = field(default_factory=TraceFilter)
    published: tuple[Published, ...] = ()

    sha256: dict[str, str] = field(default_factory=dict)  # pinned checksums of shipped weights and tokenizer
    gpu_memory_utilization: float | None = None  # vLLM engines' share of a GPU (None: computed from the free memory)

    def task_options(self, task: str) -> dict[str, Any]:
        """`load_task` options for scoring this pair's models on `task`: thinking and shots, as evaluation says."""
        return self.evaluation.task_options(task)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_pair(name: str, entry: Any, source: Path) -> Pair:
    where = f"{source.name}: pair {name!r}"
    if not isinstance(entry, dict):
        raise HarnessError(f"{where} must be a table")
    fields = {f.name: f for f in dataclasses.fields(Pair) if f.name not in ("name", "trace_filter")}
    unknown = set(entry) - set(fields)
    if unknown:
        raise HarnessError(f"{where}: unknown field {sorted(unknown)[0]!r}; valid fields: {', '.join(sorted(fields))}")
    required = [
        n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [n for n in required if n not in entry]
    if missing:
        raise HarnessError(f"{where}: missing field {missing[0]!r}")
    values = {key: value for key, value in entry.items() if key not in TABLES}
    values["tasks"] = tuple(values["tasks"]) if isinstance(values["tasks"], list) else values["tasks"]
    for key, kind in (("teacher", str), ("student", str), ("train_task", str), ("tasks", tuple)):
        if not isinstance(values[key], kind) or not values[key]:
            raise HarnessError(f"{where}: field {key!r} must be a non-empty {kind.__name__}")
    for key in ("max_length", "max_new_tokens", "train_prompts", "cpu_threads"):
        if key in values and (not is_integer(values[key]) or values[key] <= 0):
            raise HarnessError(f"{where}: field {key!r} must be a positive integer, got {values[key]!r}")
    if not isinstance(values.get("description", ""), str):
        raise HarnessError(f"{where}: field 'description' must be a string, got {values['description']!r}")
    for key in ("chat_template_kwargs", "model_kwargs", "train"):
        if not isinstance(values.get(key, {}), dict):
            raise HarnessError(f"{where}: field {key!r} must be a table, got {values[key]!r}")
    check_train_settings(values.get("train", {}), lambda name: f"train.{name}", f"{where}: ")
    sums = values.get("sha256", {})
    if not isinstance(sums, dict) or not all(isinstance(v, str) and _is_sha256(v) for v in sums.values()):
        raise HarnessError(f"{where}: field 'sha256' must be a table of sha256 hex strings, got {sums!r}")
    if unknown := sorted(set(sums) - {*ROLES, "tokenizer"}):
        raise HarnessError(f"{where}: sha256 has unknown key {unknown[0]!r}; valid keys: teacher, student, tokenizer")
    dev = values.get("dev_prompts", 0)
    if not isinstance(dev, int) or isinstance(dev, bool) or dev < 0:
        raise HarnessError(f"{where}: field 'dev_prompts' must be a non-negative integer, got {dev!r}")
    share = values.get("gpu_memory_utilization")
    if share is not None and (isinstance(share, bool) or not isinstance(share, float | int) or not 0 < share <= 1):
        raise HarnessError(f"{where}: field 'gpu_memory_utilization' must be a number in (0, 1], got {share!r}")
    if values.get("dtype", "bfloat16") not in DTYPES:
        raise unknown_choice(f"dtype in {where}:", values["dtype"], DTYPES)
    if values["architecture"] not in ARCHITECTURES:
        raise unknown_choice(f"architecture in {where}:", values["architecture"], ARCHITECTURES)
    if values.get("chat_template", "model") not in ("model", "none"):
        raise unknown_choice(f"chat_template in {where}:", values["chat_template"], ("model", "none"))
    tables = _parse_tables(entry, where, values.get("max_new_tokens"))
    values["max_new_tokens"] = tables["supervision"].max_new_tokens
    if tables["trace_filter"].require_correct:
        from tasks import load_task

        if not load_task(values["train_task"]).scorable:
            raise HarnessError(
                f"{where}: supervision.require_correct needs a train task with answers to check; "
                f"{values['train_task']!r} has none"
            )
    return Pair(name=name, **values, **tables)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _parse_tables(entry: dict[str, Any], where: str, teacher_budget: int | None) -> dict[str, Any]:
    """The pair's `evaluation`, `supervision` (+ trace filter) and `published` tables, validated."""
    evaluation, _ = parse_settings(entry.get("evaluation", {}), f"{where}: evaluation")
    supervision, rest = parse_settings(
        entry.get("supervision", {}),
        f"{where}: supervision",
        defaults=HARD_LABEL_DEFAULTS,
        extra=("drop_truncated", "require_correct"),
    )
    # the teacher's budget may be given as the pair's max_new_tokens or in its supervision table, not both apart
    if supervision.max_new_tokens is None:
        supervision = dataclasses.replace(supervision, max_new_tokens=teacher_budget or Pair.max_new_tokens)
    elif teacher_budget is not None and teacher_budget != supervision.max_new_tokens:
        raise HarnessError(
            f"{where}: max_new_tokens = {teacher_budget} and supervision.max_new_tokens = "
            f"{supervision.max_new_tokens} disagree; give the teacher's budget once"
        )
    for key, value in rest.items():
        if not isinstance(value, bool):
            raise HarnessError(f"{where}: supervision.{key} must be true or false, got {value!r}")
    published = entry.get("published", [])
    if not isinstance(published, list):
        raise HarnessError(f"{where}: published must be an array of tables ([[pairs.<name>.published]])")
    return {
        "evaluation": evaluation,
        "supervision": supervision,
        "trace_filter": TraceFilter(**rest),
        "published": tuple(_parse_published(item, f"{where}: published[{i}]") for i, item in enumerate(published)),
    }


def _parse_published(item: Any, where: str) -> Published:
    if not isinstance(item, dict):
        raise HarnessError(f"{where} must be a table")
    fields = {f.name: f for f in dataclasses.fields(Published)}
    if unknown := sorted(set(item) - set(fields)):
        raise HarnessError(f"{where}: unknown field {unknown[0]!r}; valid fields: {', '.join(fields)}")
    if missing := [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in item]:
        raise HarnessError(f"{where}: missing field {missing[0]!r}")
    if item["model"] not in ROLES:
        raise unknown_choice(f"model in {where}:", item["model"], ROLES)
    score = item["score"]
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise HarnessError(f"{where}: score must be a fraction in [0, 1] (83.9% is 0.839), got {score!r}")
    for key in ("task", "source", "protocol"):
        if not isinstance(item[key], str) or not item[key]:
            raise HarnessError(f"{where}: {key} must be a non-empty string")
    return Published(**{**item, "score": float(score)})


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
