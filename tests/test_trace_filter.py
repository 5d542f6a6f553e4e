"""Clean teacher traces: budget-hit and (optionally) wrong teacher completions are left out and counted."""

from __future__ import annotations

import pytest

from harness.trace_filter import TraceCounts, TraceFilter, ended_at_eos, filter_traces, task_scorer
from tasks import load_task

EOS = 1


def test_ended_at_eos() -> None:
    assert ended_at_eos([[5, 1], [5, 6], [], [1]], EOS) == [True, False, False, True]
    assert ended_at_eos([[5, 6]], None) == [True]  # unknown EOS: nothing is taken for truncated


def test_budget_hit_traces_are_dropped_by_default_and_counted() -> None:
    completions = [[5, 1], [5, 6, 7], [], [8, 1]]
    keep, counts = filter_traces(completions, ended_at_eos(completions, EOS), TraceFilter())
    assert keep == [0, 3]
    assert counts == TraceCounts(total=4, empty=1, truncated=1, incorrect=0, kept=2)
    assert counts.messages() == [
        "1 of 4 teacher completions are empty and are left out",
        "1 of 4 teacher completions hit the token budget without EOS (drop_truncated) and are left out",
    ]
    keep, counts = filter_traces(completions, ended_at_eos(completions, EOS), TraceFilter(drop_truncated=False))
    assert keep == [0, 1, 3] and counts.truncated == 0


def test_rejection_sampling_keeps_right_answers_on_real_gsm8k_records() -> None:
    """Teacher samples for GSM8K train problems: two right, one wrong, one cut before its answer."""
    task = load_task("gsm8k")
    docs = task.docs("train")[:4]
    golds = [doc["answer"].rsplit("#### ", 1)[1] for doc in docs]
    texts = [
        f"Step by step... so the answer is {golds[0]}.\n#### {golds[0]}",
        f"Working it out gives {int(golds[1]) + 1}.\n#### {int(golds[1]) + 1}",
        "First we compute the total, which is",  # budget hit
        f"Adding up: {golds[3]}.\n#### {golds[3]}",
    ]
    ended = [True, True, False, True]
    asked: list[list[int]] = []

    def scorer(indices: list[int]) -> list[float]:
        asked.append(indices)
        return task_scorer(task, docs, texts, str)(indices)

    keep, counts = filter_traces(texts, ended, TraceFilter(require_correct=True), scorer)
    assert keep == [0, 3]
    assert counts == TraceCounts(total=4, empty=0, truncated=1, incorrect=1, kept=2)
    assert asked == [[0, 1, 3]]  # the truncated one is never scored


def test_thinking_teacher_is_judged_after_its_thinking() -> None:
    task = load_task("gsm8k", thinking=True)
    doc = task.docs("train")[0]
    gold = doc["answer"].rsplit("#### ", 1)[1]
    texts = [f"Let me think... {gold}</think>\n#### {gold}", f"Let me think... {gold}, wait"]
    keep, counts = filter_traces(
        texts, [True, True], TraceFilter(require_correct=True), task_scorer(task, [doc] * 2, texts, str)
    )
    assert keep == [0] and counts.incorrect == 1


def test_counts_add_up_over_shards() -> None:
    total = TraceCounts()
    total.add(TraceCounts(total=3, truncated=1, kept=2))
    total.add(TraceCounts(total=2, empty=1, incorrect=1))
    assert total.to_dict() == {"total": 5, "empty": 1, "truncated": 1, "incorrect": 1, "kept": 2}


def test_require_correct_without_scorer_is_a_bug() -> None:
    with pytest.raises(ValueError, match="needs a scorer"):
        filter_traces([[1]], [True], TraceFilter(require_correct=True))
