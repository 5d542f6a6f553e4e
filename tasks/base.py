"""The task API: a benchmark is data + prompt + scoring, registered by name (as in lm-evaluation-harness)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from kdcore.errors import HarnessError
from kdcore.registry import Registry
from kdcore.scores import TRUNCATED

Doc = dict[str, Any]
Messages = list[dict[str, str]]


class Task(ABC):
    """One benchmark. Subclasses set the class attributes and implement docs, prompt, reference and metrics."""

    name: str = ""
    primary_metric: str = "exact_match"
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    scorable: bool = True  # False for a training-only task whose answers cannot be checked (no tests, no gold)
    licence: str = ""  # the data's licence, shown by `harness tasks` ("" for generated data)

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

    def score_batch(
        self, docs: list[Doc], completions: list[str], ended: Sequence[bool] | None = None
    ) -> list[dict[str, float]]:
        """`metrics_batch`, plus `truncated` (1 when the completion hit its token budget instead of ending at EOS
        or a stop string) where the generator reported how each completion `ended`. Evaluation calls this."""
        results = self.metrics_batch(docs, completions)
        if ended is None:
            return results
        return [{**metrics, TRUNCATED: float(not end)} for metrics, end in zip(results, ended, strict=True)]

    def combine(self, samples: list[dict[str, float]]) -> dict[str, float]:
        """One doc's metrics from several samples' metrics (default: the mean; HumanEval: unbiased pass@k)."""
        return mean_metrics(samples)


UNCLOSED = "unclosed_thinking"  # metric: a thinking model's completion never closed its thinking block
THINK_CLOSE = "</think>"


def mean_metrics(samples: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over `samples` (a metric a sample lacks counts 0)."""
    names = sorted({name for sample in samples for name in sample})
    return {name: sum(sample.get(name, 0.0) for sample in samples) / len(samples) for name in names}


def after_thinking(completion: str) -> str | None:
    """The text after the last `</think>` of a thinking model's completion; None when the block never closes.

    The opening `<think>` may be in the completion or in the prompt (DeepSeek-R1's chat template ends the prompt
    with it), so only the closing tag is looked for."""
    _, closed, answer = completion.rpartition(THINK_CLOSE)
    return answer if closed else None


class ThinkingTask(Task):
    """A task for a thinking model: the wrapped task scores only the text after `</think>`.

    A completion whose thinking never closes, or (where the generator says so) that hit its budget, scores 0 on
    every metric of the task, and is counted: `unclosed_thinking` and `truncated` are reported beside the task's
    own metrics, so a score lowered by budget-starved reasoning says so."""

    def __init__(self, inner: Task):
        self.inner = inner
        self.name, self.primary_metric = inner.name, inner.primary_metric
        self.max_new_tokens, self.stop = inner.max_new_tokens, inner.stop
        self.scorable, self.licence = inner.scorable, inner.licence

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.__dict__["inner"], attribute)  # the wrapped task's options (data_source, ...)

    def docs(self, split: str = "test") -> list[Doc]:
        return self.inner.docs(split)

    def prompt(self, doc: Doc) -> Messages:
        return self.inner.prompt(doc)

    def reference(self, doc: Doc) -> str:
        return self.inner.reference(doc)

    def extract(self, completion: str) -> str | None:
        answer = after_thinking(completion)
        return None if answer is None else self.inner.extract(answer)

    def metrics(self, doc: Doc, completion: str) -> dict[str, float]:
        return self.metrics_batch([doc], [completion])[0]

    def metrics_batch(self, docs: list[Doc], completions: list[str]) -> list[dict[str, float]]:
        return self.score_batch(docs, completions)

    def score_batch(
        self, docs: list[Doc], completions: list[str], ended: Sequence[bool] | None = None
    ) -> list[dict[str, float]]:
        answers = [after_thinking(completion) for completion in completions]
        ends = list(ended) if ended is not None else [True] * len(completions)
        scored = [i for i, (answer, end) in enumerate(zip(answers, ends, strict=True)) if answer is not None and end]
        inner = self.inner.metrics_batch([docs[i] for i in scored], [answers[i] for i in scored]) if scored else []
        names = sorted({name for metrics in inner for name in metrics} | {self.primary_metric})
        results = [dict.fromkeys(names, 0.0) for _ in completions]
        for i, metrics in zip(scored, inner, strict=True):
            results[i].update(metrics)
        for result, answer, end in zip(results, answers, ends, strict=True):
            result[UNCLOSED] = float(answer is None)
            if ended is not None:
                result[TRUNCATED] = float(not end)
        return results

    def combine(self, samples: list[dict[str, float]]) -> dict[str, float]:
        counts = (UNCLOSED, TRUNCATED)
        own = [{k: v for k, v in sample.items() if k not in counts} for sample in samples]
        tallies = [{k: v for k, v in sample.items() if k in counts} for sample in samples]
        return {**self.inner.combine(own), **mean_metrics(tallies)}


TASKS: Registry[type[Task]] = Registry("task", "tasks.benchmarks")  # every benchmark module is searched


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make a Task subclass loadable as `load_task(name)`."""

    def wrap(cls: type[Task]) -> type[Task]:
        cls.name = name
        return TASKS.add(name, cls)

    return wrap


def load_task(name: str, *, thinking: bool = False, **options: Any) -> Task:
    """The task registered as `name`, built with `options` (e.g. data_source, num_fewshot); a HarnessError
    naming the valid choices otherwise. `thinking=True` (set by a thinking model's pair) scores only the text
    after `</think>`, and gives 0 to a completion whose thinking never closes (see `ThinkingTask`)."""
    cls = TASKS.lookup(name)
    try:
        task = cls(**options)
    except TypeError as err:
        raise HarnessError(f"bad options for task {name!r}: {err}") from None
    return ThinkingTask(task) if thinking else task
