"""`harness verify --pair P`: do the pair's base models score what their cards say, under the pair's protocol?

Each published score in `pairs.toml` (`[[pairs.P.published]]`: model, task, score, source, protocol) is compared
with the score this harness measures for that model, decoded with the pair's `evaluation` settings. A difference
is flagged when the published value lies outside the 95% Wilson interval of the measured one over the task's
number of problems: the binomial spread of a score on n problems. (A pass@1 averaged over several samples per
problem spreads less, so the interval is conservative there.) A flagged check is a reason to look at the prompt,
the extraction and the protocol before trusting any distillation result on the pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.pairs import ROLES, Pair, Published
from kdcore.errors import HarnessError, unknown_choice
from kdcore.scores import TaskScore
from tasks import TASKS, load_task

Z_95 = 1.959964
Evaluate = Callable[[str, list[str]], dict[str, TaskScore]]  # (role, tasks) -> that model's scores


def wilson_interval(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `p` observed on `n` trials."""
    if n <= 0:
        raise ValueError("n must be positive")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Check:
    """One published score against the measured one."""

    published: Published
    metric: str
    measured: float
    n: int
    low: float
    high: float

    @property
    def agrees(self) -> bool:
        return self.low <= self.published.score <= self.high

    @property
    def difference(self) -> float:
        return self.measured - self.published.score


def metric_of(published: Published) -> str:
    return published.metric or load_task(published.task).primary_metric


def compare(published: Published, score: TaskScore, z: float = Z_95) -> Check:
    """`published` against a measured `score` (its metric, over its `n` problems)."""
    metric = metric_of(published)
    if metric not in score.metrics and metric != load_task(published.task).primary_metric:
        raise HarnessError(f"{published.task}: no metric {metric!r} measured; measured: {', '.join(score.metrics)}")
    measured = score.metrics.get(metric, score.score)
    low, high = wilson_interval(measured, score.n, z)
    return Check(published, metric, measured, score.n, low, high)


def check_published(pair: Pair) -> None:
    """One-line errors, before any model loads: no published scores, or ones naming unknown tasks or metrics."""
    if not pair.published:
        raise HarnessError(
            f"pair {pair.name!r} has no published scores to verify against; add [[pairs.{pair.name}.published]] "
            "entries (model, task, score, source, protocol) to its pairs file"
        )
    for item in pair.published:
        if item.task not in TASKS:
            raise unknown_choice(f"task in pair {pair.name!r} published scores:", item.task, TASKS)
        if not load_task(item.task).scorable:
            raise HarnessError(f"pair {pair.name!r}: {item.task} cannot be scored, so it has no published score")


def verify_pair(pair: Pair, evaluate: Evaluate, z: float = Z_95) -> list[Check]:
    """Evaluate the teacher, then the student, on the tasks they have published scores for (`evaluate(role,
    tasks)`, with the pair's protocol), and compare each score with its published value."""
    check_published(pair)
    checks = []
    for role in ROLES:
        wanted = [item for item in pair.published if item.model == role]
        if not wanted:
            continue
        scores = evaluate(role, sorted({item.task for item in wanted}))
        checks.extend(compare(item, scores[item.task], z) for item in wanted)
    return checks


def evaluate_base_model(
    pair: Pair, role: str, tasks: list[str], out: Path, *, backend: str = "auto", limit: int | None = None
) -> dict[str, TaskScore]:
    """The pair's `role` model (as shipped, not distilled) on `tasks`, decoded with the pair's evaluation
    protocol and prompted the pair's way; per-sample logs under `out/<role>/samples`, resumable."""
    from harness.cache import cache_key
    from harness.models import load_model, load_tokenizer, resolve
    from harness.supervise import pair_renderer
    from tasks.backends import make_generator
    from tasks.evaluate import evaluate_model
    from tasks.generation import Engine

    ref = resolve(getattr(pair, role))
    tokenizer = load_tokenizer(ref)
    key = cache_key({"model": ref, "tasks": tasks, "limit": limit, "generation": pair.evaluation.to_record()})
    load = lambda: load_model(ref, pair.dtype, pair.model_kwargs)  # noqa: E731
    generator = make_generator(ref, load, backend=backend, engine=Engine(dtype=pair.dtype))
    try:
        return evaluate_model(
            tasks,
            generator,
            render=pair_renderer(pair, tokenizer),
            samples_dir=out / role / "samples",
            results_dir=out,
            limit=limit,
            resume_key=key,
            generation=pair.evaluation,
        )
    finally:
        generator.close()
