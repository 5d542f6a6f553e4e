"""`harness verify`: published scores against measured ones, flagged beyond the binomial interval of n problems."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from harness.pairs import Published, get_pair
from harness.verify import Check, check_published, compare, verify_pair, wilson_interval
from kdcore.errors import HarnessError
from kdcore.scores import TaskScore


def test_wilson_interval_known_values() -> None:
    # 50% of 100: 40.4%-59.6% (the textbook Wilson value); 0 of 10: 0-27.8%
    low, high = wilson_interval(0.5, 100)
    assert math.isclose(low, 0.4038, abs_tol=1e-4) and math.isclose(high, 0.5962, abs_tol=1e-4)
    low, high = wilson_interval(0.0, 10)
    assert low == 0.0 and math.isclose(high, 0.2775, abs_tol=1e-4)
    assert (
        wilson_interval(0.839, 500)[1] - wilson_interval(0.839, 500)[0]
        < wilson_interval(0.839, 50)[1] - wilson_interval(0.839, 50)[0]
    )


def published(score: float, task: str = "math500", model: str = "student") -> Published:
    return Published(model=model, task=task, score=score, source="card", protocol="p")


@pytest.mark.parametrize(
    ("measured", "agrees"),
    [(0.839, True), (0.82, True), (0.80, False), (0.87, True), (0.88, False), (0.30, False)],
)
def test_compare_flags_differences_beyond_the_interval_of_500_problems(measured: float, agrees: bool) -> None:
    """MATH-500 and the card's 83.9: within about +-3.3 points of the measured score agrees."""
    check = compare(published(0.839), TaskScore(score=measured, n=500, metrics={"math_verify": measured}))
    assert check.agrees is agrees and check.n == 500 and check.metric == "math_verify"
    assert math.isclose(check.difference, measured - 0.839)


def test_fewer_problems_give_a_wider_interval() -> None:
    score = 0.80
    assert not compare(published(0.839), TaskScore(score=score, n=500, metrics={"math_verify": score})).agrees
    assert compare(published(0.839), TaskScore(score=score, n=50, metrics={"math_verify": score})).agrees


def test_a_named_metric_is_compared() -> None:
    item = dataclasses.replace(published(0.7, task="gsm8k"), metric="strict_match")
    check = compare(item, TaskScore(score=0.2, n=1319, metrics={"flexible_match": 0.2, "strict_match": 0.7}))
    assert check.metric == "strict_match" and check.measured == 0.7 and check.agrees


def test_verify_pair_evaluates_each_model_once_on_its_tasks() -> None:
    pair = get_pair("llama")
    calls = []
    truth = {(p.model, p.task): p.score for p in pair.published}

    def fake_evaluate(role: str, tasks: list[str]) -> dict[str, TaskScore]:
        calls.append((role, tasks))
        # the teacher scores as published; the student 10 points under on GSM8K (1319 problems: flagged)
        out = {}
        for task in tasks:
            score = truth[role, task] - (0.10 if (role, task) == ("student", "gsm8k") else 0.0)
            out[task] = TaskScore(score=score, n=1319 if task == "gsm8k" else 164, metrics={})
        return out

    checks = verify_pair(pair, fake_evaluate)
    assert calls == [("teacher", ["gsm8k", "humaneval", "math"]), ("student", ["gsm8k", "math"])]
    flagged = [(c.published.model, c.published.task) for c in checks if not c.agrees]
    assert flagged == [("student", "gsm8k")] and all(isinstance(c, Check) for c in checks)


def test_no_published_scores_is_a_one_line_error() -> None:
    with pytest.raises(
        HarnessError, match=r"pair 'gemma' has no published scores to verify against; add \[\[pairs.gemma.published\]\]"
    ):
        check_published(get_pair("gemma"))


def test_an_unknown_task_is_refused_before_anything_loads(tmp_path: Path) -> None:
    pair = dataclasses.replace(get_pair("qwen"), published=(published(0.5, task="mmlu"),))
    with pytest.raises(HarnessError, match="unknown task in pair 'qwen' published scores: 'mmlu'"):
        verify_pair(pair, lambda role, tasks: pytest.fail("evaluated"))


def test_verify_runs_end_to_end_on_the_tiny_pair(mini_tiny, tmp_path: Path) -> None:
    """The real path (load the base models, decode with the pair's protocol, score, compare) on the miniature
    tiny pair: a published value equal to what the models score agrees; one 40 points off is flagged."""
    from harness.verify import evaluate_base_model

    pair = get_pair("tiny")
    measured = {}

    def evaluate(role: str, tasks: list[str]) -> dict[str, TaskScore]:
        scores = evaluate_base_model(pair, role, tasks, tmp_path, backend="transformers", limit=40)
        measured[role] = scores["arith"].score
        return scores

    verify_pair(dataclasses.replace(pair, published=(published(0.5, "arith", "teacher"),)), evaluate)
    teacher = measured["teacher"]
    far = teacher + 0.4 if teacher < 0.5 else teacher - 0.4  # beyond any 95% interval of 40 problems (<= +-0.16)
    pair = dataclasses.replace(
        pair, published=(published(teacher, "arith", "teacher"), published(far, "arith", "teacher"))
    )
    checks = verify_pair(pair, evaluate)
    assert [c.n for c in checks] == [40, 40] and [c.measured for c in checks] == [teacher, teacher]
    assert [c.agrees for c in checks] == [True, False] and "student" not in measured
    assert (tmp_path / "teacher" / "samples" / "arith.jsonl").exists()
