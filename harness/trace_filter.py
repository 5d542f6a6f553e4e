"""Clean teacher traces: which teacher completions become supervision, and how many were left out and why.

Pure functions over completions (token lists or texts), whether each ended at EOS, and optionally a scorer:
- an empty completion is always left out;
- one that hit its token budget without EOS (`drop_truncated`, on by default) is left out: a cut trace has no
  answer, and as a hard label it teaches the student to ramble;
- with `require_correct`, only completions whose final answer the task's scorer accepts are kept (rejection-
  sampling distillation, as DeepSeek-R1's distillation data and most reasoning-distillation recipes do).
The settings are part of the supervision cache key, and the counts go in the record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.base import Doc, Task

Scorer = Callable[[list[int]], list[float]]  # indices of completions -> each one's score in [0, 1]


@dataclass(frozen=True)
class TraceFilter:
    """Which teacher completions are kept as supervision (see the module docstring)."""

    drop_truncated: bool = True
    require_correct: bool = False


@dataclass
class TraceCounts:
    """How many teacher completions were generated, left out (by reason, each counted once, in this order) and
    kept. Adds up over shards with `add`."""

    total: int = 0
    empty: int = 0
    truncated: int = 0
    incorrect: int = 0
    kept: int = 0

    def add(self, other: TraceCounts) -> None:
        for name in ("total", "empty", "truncated", "incorrect", "kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def messages(self) -> list[str]:
        """One warning line per reason that left something out."""
        reasons = {
            "empty": "are empty",
            "truncated": "hit the token budget without EOS (drop_truncated)",
            "incorrect": "have a wrong final answer (require_correct)",
        }
        return [
            f"{getattr(self, name)} of {self.total} teacher completions {text} and are left out"
            for name, text in reasons.items()
            if getattr(self, name)
        ]


def ended_at_eos(completions: Sequence[Sequence[int]], eos_id: int | Collection[int] | None) -> list[bool]:
    """Whether each token-id completion ends at an end id (`eos_id`: one id or all of them; generators keep it);
    all True when no end id is known."""
    ends = {eos_id} if isinstance(eos_id, int) else set(eos_id or ())
    return [not ends or (len(c) > 0 and c[-1] in ends) for c in completions]


def filter_traces(
    completions: Sequence[Sequence[Any]],
    ended: Sequence[bool],
    trace_filter: TraceFilter,
    scorer: Scorer | None = None,
) -> tuple[list[int], TraceCounts]:
    """The indices of the completions to keep, and the counts. `scorer` is needed with `require_correct` and
    is asked only about completions that survive the other checks."""
    if trace_filter.require_correct and scorer is None:
        raise ValueError("require_correct needs a scorer")
    counts = TraceCounts(total=len(completions))
    candidates = []
    for i, (completion, end) in enumerate(zip(completions, ended, strict=True)):
        if len(completion) == 0:
            counts.empty += 1
        elif trace_filter.drop_truncated and not end:
            counts.truncated += 1
        else:
            candidates.append(i)
    if trace_filter.require_correct and candidates:
        scores = scorer(candidates)
        kept = [i for i, score in zip(candidates, scores, strict=True) if score >= 1.0]
        counts.incorrect = len(candidates) - len(kept)
        candidates = kept
    counts.kept = len(candidates)
    return candidates, counts


def task_scorer(task: Task, docs: Sequence[Doc], completions: Sequence[Any], decode: Callable[[Any], str]) -> Scorer:
    """A `Scorer` judging `completions[i]` (decoded) against `docs[i]` with `task`'s primary metric; for a
    thinking teacher pass a task loaded with `thinking=True`, so only the answer after `</think>` counts."""

    def score(indices: list[int]) -> list[float]:
        texts = [decode(completions[i]) for i in indices]
        results = task.score_batch([docs[i] for i in indices], texts)
        return [result[task.primary_metric] for result in results]

    return score
