"""A pair's protocol reaches the generator and the record: evaluation settings, thinking, and clean teacher traces."""

from __future__ import annotations

import json
from pathlib import Path

from harness.pairs import get_pair
from harness.supervise import SupervisionSettings, build_supervision
from harness.trace_filter import TraceCounts, TraceFilter, task_scorer
from tasks import load_task
from tasks.evaluate import evaluate_task
from tasks.protocol import GenerationSettings
from tests.test_bad_input import ScriptedGenerator
from tests.tiny_training import tiny_student


class RecordingGenerator:
    """Answers each prompt with fixed completions and remembers the keywords it was called with."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers, self.calls = answers, []

    def generate(self, prompts, **kwargs):
        self.calls.append(kwargs)
        return self.answers[: len(prompts)]


def test_the_pairs_evaluation_settings_reach_the_generator_and_the_score(tmp_path: Path) -> None:
    """deepseek's protocol on two real MATH-500 problems: 4 samples at 0.6 / 0.95 / 32768, thinking, recorded."""
    pair = get_pair("deepseek")
    task = load_task("math500", **pair.task_options("math500"))
    docs = task.docs("test")[:2]
    right = [f"Compute carefully.</think>\nSo $\\boxed{{{doc['answer']}}}$." for doc in docs]
    unclosed = "Compute carefully, then check again, and"
    answers = [[right[0], right[0], unclosed, right[0]], [unclosed] * 4]
    generator = RecordingGenerator(answers)
    score = evaluate_task(task, generator, str, limit=2, samples_path=tmp_path / "m.jsonl", generation=pair.evaluation)
    (call,) = generator.calls
    assert (call["temperature"], call["top_p"], call["max_new_tokens"], call["n"]) == (0.6, 0.95, 32768, 4)
    assert "top_k" not in call  # off: not passed, so generators without top-k serve greedy-top-k protocols too
    assert score.n == 2 and score.score == (0.75 + 0.0) / 2
    assert score.metrics["unclosed_thinking"] == (0.25 + 1.0) / 2
    assert score.settings["thinking"] and score.settings["samples"] == 4 and score.settings["max_new_tokens"] == 32768
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [row["metrics"]["unclosed_thinking"] for row in rows] == [0.25, 1.0]


def test_without_settings_evaluation_is_as_before(tmp_path: Path) -> None:
    generator = RecordingGenerator([["#### 3"]])
    task = load_task("arith")
    score = evaluate_task(task, generator, str, limit=1)
    budget = task.max_new_tokens  # the task's own budget
    assert generator.calls == [{"max_new_tokens": budget, "temperature": 0.0, "stop": ("\n\n",), "n": 1, "seed": 0}]
    assert score.settings == {"temperature": 0.0, "samples": 1, "max_new_tokens": budget, "stop": ["\n\n"]}


def test_a_generator_that_reports_ended_counts_truncated(tmp_path: Path) -> None:
    """Rows may carry `ended` (a generator's finish reasons): a thinking task then zeroes budget-hit samples."""
    from tasks.evaluate import _score_rows

    task = load_task("gsm8k", thinking=True)
    doc = task.docs("test")[0]
    rows = [
        {
            "doc_id": 0,
            "completion": "x</think>\n#### 18",
            "completions": ["x</think>\n#### 18"] * 2,
            "ended": [True, False],
        }
    ]
    (row,) = _score_rows(task, [doc], rows)
    assert row["metrics"]["flexible_match"] == 0.5 and row["metrics"]["truncated"] == 0.5


def test_supervision_drops_budget_hit_teacher_traces_and_counts_them(caplog) -> None:
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12], [13]]
    answers = [[13, 1], [14, 15, 16], [], [17, 18, 1]]  # EOS = 1; the second hit its budget
    counts = TraceCounts()
    data = build_supervision(
        ScriptedGenerator(answers, tiny_student(), vocab_rows=40),
        prompts,
        max_new_tokens=3,
        settings=SupervisionSettings(top_k=4),
        pad_id=0,
        eos_id=1,
        counts=counts,
    )
    assert data["prompt_ids"] == [prompts[0], prompts[3]] and data["completion_ids"] == [answers[0], answers[3]]
    assert counts == TraceCounts(total=4, empty=1, truncated=1, incorrect=0, kept=2)
    assert (
        "1 of 4 teacher completions hit the token budget without EOS (drop_truncated) and are left out" in caplog.text
    )


def test_supervision_rejection_sampling_on_real_gsm8k_answers() -> None:
    """require_correct: the teacher's decoded answers are judged against the train docs' gold."""
    task = load_task("gsm8k")
    docs = task.docs("train")[:2]
    texts = {3: f"#### {docs[0]['answer'].rsplit('#### ', 1)[1]}", 4: "#### -1"}
    prompts, answers = [[5, 6], [7, 8]], [[3, 1], [4, 1]]
    counts = TraceCounts()
    data = build_supervision(
        ScriptedGenerator(answers, tiny_student(), vocab_rows=40),
        prompts,
        max_new_tokens=3,
        settings=SupervisionSettings(top_k=4),
        pad_id=0,
        eos_id=1,
        trace_filter=TraceFilter(require_correct=True),
        scorer=lambda completions: task_scorer(task, docs, completions, lambda ids: texts[ids[0]]),
        counts=counts,
    )
    assert data["completion_ids"] == [answers[0]] and counts.incorrect == 1 and counts.kept == 1


def test_settings_record_leaves_sources_out() -> None:
    settings = GenerationSettings(temperature=0.6, samples=2, stop=("###",), sources={"temperature": "card"})
    assert settings.to_record()["stop"] == ["###"] and "sources" not in settings.to_record()


def test_a_teacher_whose_every_trace_hits_the_budget_is_a_clear_error() -> None:
    import pytest

    from kdcore.errors import HarnessError

    with pytest.raises(HarnessError, match=r"none of 2 teacher completions could be kept \(2 of 2 .*budget"):
        build_supervision(
            ScriptedGenerator([[5, 6], [7, 8]], tiny_student(), vocab_rows=40),
            [[2], [3]],
            max_new_tokens=2,
            settings=SupervisionSettings(top_k=4),
            pad_id=0,
            eos_id=1,
        )
