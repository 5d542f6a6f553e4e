"""Generation settings: how a model is decoded for one purpose (evaluation or teacher supervision), and the
`Sampling` of one generation call that they give for a task.

A pair (`harness/pairs.toml`) holds one `GenerationSettings` for evaluating its models and one for building its
teacher's supervision, each following the models' card or technical report, with the source of every value
(`sources`). Evaluation and supervision code take the object as one argument; the record stores `to_record()`.
This module sits in `tasks/` (not `harness/`) because `tasks.evaluate` takes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any

from kdcore.errors import HarnessError


@dataclass(frozen=True)
class Sampling:
    """How completions are drawn, the same on every backend: up to `max_new_tokens` tokens, at `temperature` (0:
    greedy) with nucleus `top_p` and `top_k` (0: off), cut at the `stop` strings, `n` per prompt, from `seed`
    (completion i of n from seed + i). Token-id generation (`generate_ids`, `generate_topk`) draws one completion
    and reads no stop strings."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int = 0
    n: int = 1

    def seeded(self, seed: int) -> Sampling:
        return replace(self, seed=seed)


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; each field's meaning is the one vLLM's `SamplingParams` and lm-eval give it.

    `max_new_tokens` None means each task's own budget (`Task.max_new_tokens`); `budgets` sets it per task (as
    Llama 3.1's evaluation does: GSM8K 1024, MATH 5120) and wins over `max_new_tokens`. `samples` completions are drawn
    per problem: the score is pass@1 averaged over them (and unbiased pass@k for code). `stop` strings are added
    to the task's own. `shots` maps a task name to its number of few-shot examples (absent: zero-shot).
    `thinking`: the model writes `<think> ... </think>` first; answers are read after the block closes only.
    `sources` maps a field name to where its value comes from (a card, a report, or "chosen: why").
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int | None = None
    budgets: dict[str, int] = field(default_factory=dict)
    samples: int = 1
    stop: tuple[str, ...] = ()
    shots: dict[str, int] = field(default_factory=dict)
    thinking: bool = False
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def budget(self, task: str, task_budget: int) -> int:
        """The completion budget for `task`, whose own default is `task_budget`."""
        if task in self.budgets:
            return self.budgets[task]
        return self.max_new_tokens if self.max_new_tokens is not None else task_budget

    def sampling(self, task: Any, seed: int = 0) -> Sampling:
        """The `Sampling` of one `tasks.Task` under these settings (its budget, its stop strings and these)."""
        return Sampling(
            max_new_tokens=self.budget(task.name, task.max_new_tokens),
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(dict.fromkeys((*task.stop, *self.stop))),
            seed=seed,
            n=self.samples,
        )

    def task_options(self, task: str) -> dict[str, Any]:
        """Options for `load_task(task, ...)` these settings imply: thinking, and shots where set."""
        options: dict[str, Any] = {"thinking": True} if self.thinking else {}
        if self.shots.get(task):
            options["num_fewshot"] = self.shots[task]
        return options

    def to_record(self) -> dict[str, Any]:
        """The settings a score was made with, as the record stores them (sources left out: they are text)."""
        values = dataclasses.asdict(self)
        values.pop("sources")
        values["stop"] = list(self.stop)
        return values


FIELDS = tuple(f.name for f in dataclasses.fields(GenerationSettings))


def check_settings(settings: GenerationSettings, where: str = "generation settings") -> None:
    """A one-line HarnessError naming the first field out of range."""
    s = settings
    checks = (
        ("temperature", isinstance(s.temperature, int | float) and s.temperature >= 0, "a number >= 0"),
        ("top_p", isinstance(s.top_p, int | float) and 0 < s.top_p <= 1, "a number in (0, 1]"),
        ("top_k", isinstance(s.top_k, int) and s.top_k >= 0, "an integer >= 0 (0 = off)"),
        (
            "max_new_tokens",
            s.max_new_tokens is None or (isinstance(s.max_new_tokens, int) and s.max_new_tokens > 0),
            "a positive integer",
        ),
        (
            "budgets",
            all(isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in s.budgets.items()),
            "a table of task = positive integer",
        ),
        ("samples", isinstance(s.samples, int) and s.samples > 0, "a positive integer"),
        ("stop", all(isinstance(x, str) and x for x in s.stop), "a list of non-empty strings"),
        (
            "shots",
            all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in s.shots.items()),
            "a table of task = integer >= 0",
        ),
        ("thinking", isinstance(s.thinking, bool), "true or false"),
        ("sources", all(isinstance(k, str) and isinstance(v, str) for k, v in s.sources.items()), "strings"),
    )
    for name, ok, allowed in checks:
        if not ok:
            raise HarnessError(f"{where}: {name} must be {allowed}, got {getattr(s, name)!r}")
    if unknown := sorted(set(s.sources) - set(FIELDS)):
        raise HarnessError(f"{where}: source given for unknown field {unknown[0]!r}; fields: {', '.join(FIELDS)}")
    if s.samples > 1 and s.greedy:
        raise HarnessError(f"{where}: samples = {s.samples} with temperature 0 gives {s.samples} equal completions")


def parse_settings(
    table: Any, where: str, defaults: GenerationSettings | None = None, extra: tuple[str, ...] = ()
) -> tuple[GenerationSettings, dict[str, Any]]:
    """A `GenerationSettings` from a TOML table (`source.<field> = "..."` keys give sources), on top of
    `defaults`; keys named in `extra` are returned apart. A one-line HarnessError for anything else."""
    if not isinstance(table, dict):
        raise HarnessError(f"{where} must be a table")
    values = dict(table)
    sources = values.pop("source", {})
    if not isinstance(sources, dict):
        raise HarnessError(f'{where}: source must be a table of field = "where the value comes from"')
    rest = {key: values.pop(key) for key in extra if key in values}
    allowed = [f for f in FIELDS if f != "sources"]
    if unknown := sorted(set(values) - set(allowed)):
        raise HarnessError(f"{where}: unknown setting {unknown[0]!r}; valid settings: {', '.join([*allowed, *extra])}")
    if "stop" in values:
        if not isinstance(values["stop"], list):
            raise HarnessError(f"{where}: stop must be a list of strings, got {values['stop']!r}")
        values["stop"] = tuple(values["stop"])
    if (
        "temperature" in values
        and isinstance(values["temperature"], int)
        and not isinstance(values["temperature"], bool)
    ):
        values["temperature"] = float(values["temperature"])
    base = defaults or GenerationSettings()
    merged_sources = {**base.sources, **sources} if defaults else sources
    try:
        settings = dataclasses.replace(base, **values, sources=merged_sources)
    except HarnessError as err:
        raise HarnessError(f"{where}: {str(err).removeprefix('generation settings: ')}") from None
    check_settings(settings, where)
    return settings, rest
