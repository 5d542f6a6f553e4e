"""A benchmark score: the type tasks produce and run records carry."""

from __future__ import annotations

from dataclasses import dataclass, field

TRUNCATED = "truncated"  # metric: the share of completions that hit their token budget (tasks.base.Task.score_batch)


@dataclass
class TaskScore:
    """A benchmark's score for one model: the primary metric, the number of docs, and any other metrics."""

    score: float
    n: int
    metrics: dict[str, float] = field(default_factory=dict)
    samples: str | None = None  # per-sample log, relative to the results dir
    settings: dict | None = None  # the generation settings the score was made with (tasks.protocol)
