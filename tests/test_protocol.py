"""A pair's protocol reaches the generator and the record: evaluation settings, thinking, and clean teacher traces."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

from harness.models import load_tokenizer, resolve
from harness.pairs import get_pair
from harness.supervise import (
    SupervisionSettings,
    build_supervision,
    load_or_build_supervision,
    supervision_folder,
    teacher_samples,
    trace_counts,
)
from harness.trace_filter import TraceCounts, TraceFilter, task_scorer
from tasks import load_task
from tasks.evaluate import evaluate_task
from tasks.generation import Completion
from tasks.protocol import GenerationSettings, Sampling
from tasks.transformers_backend import TransformersGenerator
from tests.test_bad_input import ScriptedGenerator
from tests.tiny_training import tiny_student


class RecordingGenerator:
    """Answers each prompt with fixed completions and remembers the keywords it was called with."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers, self.calls = answers, []

    def generate(self, prompts, sampling):
        self.calls.append(sampling)
        return [[Completion(text, ended=True) for text in outs] for outs in self.answers[: len(prompts)]]


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
    assert (call.temperature, call.top_p, call.max_new_tokens, call.n) == (0.6, 0.95, 32768, 4)
    assert call.top_k == 0  # off, in the one Sampling every generator takes whole
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
    assert generator.calls == [Sampling(max_new_tokens=budget, temperature=0.0, stop=("\n\n",), n=1, seed=0)]
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


def test_supervision_sampling_takes_top_k_and_top_p_and_keeps_the_raw_soft_labels() -> None:
    """transformers path: sampling at temperature 1 with top-k sampling 1 (or a tiny top-p) is greedy, with the
    same soft labels as greedy (the raw distribution at temperature 1); without them the samples differ, so it was
    the top-k / top-p that made them greedy."""
    generator = TransformersGenerator(tiny_student(), SimpleNamespace(pad_token_id=0, eos_token_id=1))
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14, 15]]

    def sample(temperature: float, **sampling):
        settings = SupervisionSettings(top_k=4, temperature=temperature, seed=3)
        return teacher_samples(generator, prompts, max_new_tokens=6, settings=settings, pad_id=0, **sampling)

    greedy = sample(0.0)
    assert [c for c, _, _ in sample(1.0)] != [c for c, _, _ in greedy]
    for restricted in (sample(1.0, sampling_top_k=1), sample(1.0, top_p=1e-3)):
        assert [c for c, _, _ in restricted] == [c for c, _, _ in greedy]
        for (_, ids, logprobs), (_, greedy_ids, greedy_logprobs) in zip(restricted, greedy, strict=True):
            assert ids.shape[1] == 4 and torch.equal(ids, greedy_ids) and torch.equal(logprobs, greedy_logprobs)


class TopkSpy:
    """A `TopkGenerator` that records the keywords it is called with and completes every prompt with one token and
    EOS (its top-k: made-up ids and log-probs of the right shapes)."""

    devices, backend = 1, "vllm"

    def __init__(self, eos_id: int) -> None:
        self.eos_id, self.calls = eos_id, []

    def generate_topk(self, prompt_ids, sampling, *, k):
        self.calls.append({"k": k, "sampling": sampling})
        ids = torch.arange(k, dtype=torch.int32).repeat(2, 1)
        return [([5, self.eos_id], ids, torch.full((2, k), -3.0)) for _ in prompt_ids]

    def close(self) -> None:
        """Nothing to release."""


def test_the_pairs_supervision_top_p_and_top_k_reach_the_generator(tmp_path: Path, monkeypatch) -> None:
    """load_or_build_supervision samples with the pair's supervision top-p and top-k (the sampling's), while `k`
    (the soft labels') comes from the settings; the shard's trace counts are read back for the record."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    protocol = GenerationSettings(temperature=0.7, top_p=0.9, top_k=5)
    pair = replace(get_pair("tiny"), train_prompts=3, supervision=protocol)
    tokenizer = load_tokenizer(resolve(pair.teacher))
    spy = TopkSpy(tokenizer.eos_token_id)
    settings = SupervisionSettings(top_k=4, temperature=0.7)
    data, cost = load_or_build_supervision(pair, "teacher-id", tokenizer, lambda: spy, settings, teacher_params=1)
    assert spy.calls == [
        {"k": 4, "sampling": Sampling(max_new_tokens=pair.max_new_tokens, temperature=0.7, seed=0, top_p=0.9, top_k=5)}
    ]
    assert len(data) == 3
    assert trace_counts(supervision_folder(cost.cache_key)) == TraceCounts(total=3, kept=3)
