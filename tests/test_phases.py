"""The run's phases: evaluation starts one generator per model for all its tasks, and a method whose data plan asks
for the student's own responses receives them with its training examples (cached, charged as their own phase)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness import phases
from harness.cli import main
from harness.models import resolve
from harness.pipeline import RunSpec, run
from harness.spec import Execution
from tasks import backends
from tests.test_residency import PAIRS
from trainers.objectives import METHODS, Hard
from trainers.plan import DataPlan, ModelResponses


class CountingFactory:
    """Wraps `make_generator`, counting the generators made."""

    def __init__(self, real) -> None:
        self.real, self.made = real, 0

    def __call__(self, *args, **kwargs):
        self.made += 1
        return self.real(*args, **kwargs)


def test_harness_eval_starts_one_generator_for_all_tasks(mini_tiny, tmp_path: Path, monkeypatch) -> None:
    factory = CountingFactory(backends.make_generator)
    monkeypatch.setattr(backends, "make_generator", factory)
    model = resolve("builtin:tiny/student")
    args = ["harness", "eval", "--model", model, "--tasks", "arith,gsm8k", "--limit", "2", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    assert factory.made == 1
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert sorted(scores) == ["arith", "gsm8k"] and all(s["n"] == 2 for s in scores.values())


def test_a_run_starts_one_generator_per_evaluated_model(own_tiny_cache, tmp_path: Path, monkeypatch) -> None:
    factory = CountingFactory(phases.make_generator)
    monkeypatch.setattr(phases, "make_generator", factory)
    pairs_file = tmp_path / "pairs.toml"
    pairs_file.write_text(PAIRS.replace('tasks = ["arith"]', 'tasks = ["arith", "gsm8k"]'))
    record, _ = run(
        RunSpec(
            pair="tiny", method="sft", limit=2, pairs_file=pairs_file, execution=Execution(results_dir=tmp_path / "r")
        )
    )
    assert sorted(record.scores) == sorted(record.teacher_scores) == ["arith", "gsm8k"]
    assert factory.made == 3  # the student's evaluation, the teacher's and the student's before, two tasks each


class WithResponses(Hard):
    """A trivial objective whose data plan asks for the student's own responses."""

    name = "with-responses"

    def data_plan(self, teacher_signal: str | None = None) -> DataPlan:
        return DataPlan(
            completions="teacher", sources=(ModelResponses(model="student", example_field="student_completion_ids"),)
        )


@pytest.fixture
def own_cache(own_tiny_cache: Path, tmp_path: Path) -> Path:
    pairs_file = tmp_path / "pairs.toml"
    pairs_file.write_text(PAIRS)
    return pairs_file


def test_student_responses_reach_training_as_a_field_of_the_examples(
    own_cache: Path, trained_examples, greedy_ids, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(METHODS, "_members", {**METHODS, WithResponses.name: WithResponses})
    seen = trained_examples
    spec = RunSpec(
        pair="tiny",
        method="with-responses",
        limit=2,
        pairs_file=own_cache,
        execution=Execution(results_dir=tmp_path / "r"),
    )
    first, _ = run(spec)
    (examples,) = seen
    got = [[int(t) for t in ex["student_completion_ids"]] for ex in examples]
    assert got == greedy_ids("builtin:tiny/student", examples, 8)  # the initial student's greedy responses
    assert all("topk_ids" in ex and "completion_ids" in ex for ex in examples)  # beside the teacher's supervision
    cost = first.cost.phases["student_responses"]
    assert not cost.reused and cost.tokens > 0 and cost.backend == "transformers"
    assert list(first.cost.phases) == [
        "supervise",
        "student_responses",
        "train",
        "evaluate",
        "evaluate_teacher",
        "evaluate_student_before",
    ]

    second, _ = run(spec)  # a repeat: the responses come from the cache, charged with their build
    again = second.cost.phases["student_responses"]
    assert again.reused and again.cache_key == cost.cache_key and again.tokens == cost.tokens
    assert [[int(t) for t in ex["student_completion_ids"]] for ex in seen[1]] == got
