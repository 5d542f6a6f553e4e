"""The task API: a benchmark is data + prompt + scoring, registered by name (as in lm-evaluation-harness)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from kdcore.errors import HarnessError, unknown_choice

Doc = dict[str, Any]
Messages = list[dict[str, str]]


class Task(ABC):
    """One benchmark. Subclasses set the class attributes and implement docs, prompt, reference and metrics."""

    name: str = ""
    primary_metric: str = "exact_match"
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()

    @abstractmethod
    def docs(self, split: str = "test") -> list[Doc]:
        """The records of `split`, as dicts with the data files' own fields."""

    @abstractmethod
    def prompt(self, doc: Doc) -> Messages:
        """Chat messages for `doc` (zero-shot); the generator renders them with the model's chat template."""

    @abstractmethod
    def reference(self, doc: Doc) -> str:
        """The gold completion for `doc` (the data set's own worked answer), used by `sft` and by tests."""

    @abstractmethod
    def metrics(self, doc: Doc, completion: str) -> dict[str, float]:
        """Every metric this task reports for one completion, each in [0, 1]; includes `primary_metric`."""

    def score(self, doc: Doc, completion: str) -> float:
        """The primary metric for one completion, in [0, 1]."""
        return self.metrics(doc, completion)[self.primary_metric]

    def extract(self, completion: str) -> str | None:
        """The answer the scorer read from `completion` (for per-sample logs); None when there is none."""
        return None

    def metrics_batch(self, docs: list[Doc], completions: list[str]) -> list[dict[str, float]]:
        """`metrics` for many (doc, completion) pairs at once; tasks that can score in parallel override it."""
        return [self.metrics(doc, completion) for doc, completion in zip(docs, completions, strict=True)]

    def combine(self, samples: list[dict[str, float]]) -> dict[str, float]:
        """One doc's metrics from several samples' metrics (default: the mean; HumanEval: unbiased pass@k)."""
        names = sorted({name for sample in samples for name in sample})
        return {name: sum(sample.get(name, 0.0) for sample in samples) / len(samples) for name in names}


_REGISTRY: dict[str, Callable[[], Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make a Task subclass loadable as `load_task(name)`."""

    def wrap(cls: type[Task]) -> type[Task]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def load_task(name: str, **options: Any) -> Task:
    """The task registered as `name`, built with `options` (e.g. data_source, num_fewshot); a HarnessError
    naming the valid choices otherwise."""
    if name not in _REGISTRY:
        raise unknown_choice("task", name, _REGISTRY)
    try:
        return _REGISTRY[name](**options)
    except TypeError as err:
        raise HarnessError(f"bad options for task {name!r}: {err}") from None
