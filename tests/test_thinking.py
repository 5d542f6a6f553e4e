"""Thinking models: answers are read after `</think>` only, on real GSM8K and MATH-500 records.

The completions are written the way DeepSeek-R1-Distill models answer (the prompt ends with `<think>\\n`, so a
completion starts inside the thinking block): closed with the right answer after it, closed with a wrong one
after it (the right number inside the thinking), never closed (the right number inside), and closed and right
but cut at the token budget (the generator reports it did not end at EOS).
"""

from __future__ import annotations

import pytest

from tasks import load_task
from tasks.base import ThinkingTask, after_thinking

GSM8K_THINK = (
    "Okay, so Janet has 16 eggs a day. She eats 3 and bakes with 4, so 16 - 3 - 4 = 9 are left. "
    "At $2 each that is 9 * 2 = 18 dollars. Let me double-check: 3 + 4 = 7, 16 - 7 = 9, 9 * 2 = 18. Yes.\n"
)
MATH_THINK = (
    "We need f(-2) + f(-1) + f(0) for f(x) = (3x-2)/(x-2). f(-2) = (-8)/(-4) = 2. f(-1) = (-5)/(-3) = 5/3. "
    "f(0) = (-2)/(-2) = 1. Sum: 2 + 5/3 + 1 = 14/3. So the answer is \\boxed{\\frac{14}{3}}.\n"
)
CASES = {
    "closed_right": (
        "{think}</think>\n\n{right}",
        [True],
        {"score": 1.0, "unclosed_thinking": 0.0, "truncated": 0.0},
    ),
    "closed_wrong": (
        "{think}</think>\n\n{wrong}",
        [True],
        {"score": 0.0, "unclosed_thinking": 0.0, "truncated": 0.0},
    ),
    "unclosed": ("{think}Hmm, wait, let me reconsider the", [False], {"score": 0.0, "unclosed_thinking": 1.0}),
    "budget_hit": (
        "{think}</think>\n\n{right} And to verify once more, we",
        [False],
        {"score": 0.0, "unclosed_thinking": 0.0, "truncated": 1.0},
    ),
}
TASKS = {
    "gsm8k": (0, GSM8K_THINK, "Janet makes 9 * 2 = **$18** a day.\n#### 18", "She makes $20 a day.\n#### 20"),
    "math500": (2, MATH_THINK, "The sum is $\\boxed{\\frac{14}{3}}$.", "The sum is $\\boxed{\\frac{13}{3}}$."),
}


@pytest.mark.parametrize("task_name", sorted(TASKS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_thinking_scores_only_the_answer_after_the_block(task_name: str, case: str) -> None:
    index, think, right, wrong = TASKS[task_name]
    template, ended, expected = CASES[case]
    task = load_task(task_name, thinking=True)
    doc = task.docs("test")[index]
    completion = template.format(think=think, right=right, wrong=wrong)
    (metrics,) = task.score_batch([doc], [completion], ended=ended)
    assert metrics[task.primary_metric] == expected["score"]
    for name in ("unclosed_thinking", "truncated"):
        if name in expected:
            assert metrics[name] == expected[name], name


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_without_thinking_the_same_completions_get_credit_they_should_not(task_name: str) -> None:
    """Why the pair's `thinking` matters: a plain task reads the right number inside an unclosed block."""
    index, think, _, wrong = TASKS[task_name]
    plain = load_task(task_name)
    doc = plain.docs("test")[index]
    assert plain.score(doc, think + "Hmm, wait, let me reconsider the") == 1.0
    assert load_task(task_name, thinking=True).score(doc, think + "Hmm, wait, let me reconsider the") == 0.0
    # a closed block with a wrong answer after it: the plain task still reads only the last number
    assert plain.score(doc, f"{think}</think>\n\n{wrong}") == 0.0


def test_thinking_task_keeps_the_task_interface() -> None:
    task = load_task("gsm8k", thinking=True, num_fewshot=2)
    assert isinstance(task, ThinkingTask)
    assert (task.name, task.primary_metric, task.num_fewshot) == ("gsm8k", "flexible_match", 2)
    assert len(task.prompt(task.docs("test")[0])) == 5  # two worked examples, then the question
    assert task.extract(f"{GSM8K_THINK}</think>\n#### 18") == "18"
    assert task.extract(GSM8K_THINK) is None
    assert after_thinking("<think>a</think>b</think>c") == "c"


def test_samples_combine_counts_and_humaneval_pass_at_k() -> None:
    """Several samples of one problem: pass@k from the samples' pass@1, the counts averaged."""
    task = load_task("humaneval", thinking=True)
    doc = task.docs("test")[0]
    good = f"```python\n{doc['prompt']}{doc['canonical_solution']}```"
    completions = [f"plan</think>\n{good}", "plan, still thinking", f"plan</think>\n{good}", "</think>\nno code"]
    samples = task.score_batch([doc] * 4, completions, ended=[True, False, True, True])
    combined = task.combine(samples)
    assert [s["pass@1"] for s in samples] == [1.0, 0.0, 1.0, 0.0]
    assert combined["pass@1"] == 0.5 and combined["unclosed_thinking"] == 0.25 and combined["truncated"] == 0.25


def test_plain_task_counts_truncated_without_zeroing() -> None:
    task = load_task("gsm8k")
    doc = task.docs("test")[0]
    (metrics,) = task.score_batch([doc], ["9 * 2 = 18\n#### 18"], ended=[False])
    assert metrics["flexible_match"] == 1.0 and metrics["truncated"] == 1.0
    assert "truncated" not in task.score_batch([doc], ["#### 18"])[0]
