"""MATH-500 and MATH scoring on real records: last `\\boxed{}` extraction and math-verify equivalence."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tasks import load_task
from tasks.benchmarks.math import Math, Math500, Verifier, gold_answer, last_boxed


def sample_of(task, n: int = 30):
    return random.Random(0).sample(task.docs("test"), n)


@pytest.mark.parametrize("task", [Math500(), Math()], ids=["math500", "math"])
def test_gold_answers_score_one_and_perturbed_ones_zero(task):
    for doc in sample_of(task):
        gold = gold_answer(doc)
        assert task.score(doc, f"Working omitted. The final answer is $\\boxed{{{gold}}}$.") == 1.0
        assert task.score(doc, task.reference(doc)) == 1.0  # the worked solution ends in the same boxed answer
        assert task.score(doc, f"The final answer is $\\boxed{{{gold}+1}}$.") == 0.0


def test_math500_gold_is_its_answer_field_and_full_math_gold_is_the_solution_box():
    math500 = {doc["unique_id"]: doc for doc in Math500().docs()}
    full = {doc["unique_id"]: doc for doc in Math().docs()}
    doc = math500["test/precalculus/807.json"]
    assert gold_answer(doc) == doc["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert gold_answer(full["test/precalculus/807.json"]) == doc["answer"]
    assert gold_answer(full["test/algebra/1.json"]) == "2"


@pytest.mark.parametrize(
    ("gold", "prediction"),
    [("\\frac{1}{2}", "0.5"), ("2\\sqrt{2}", "\\sqrt{8}"), ("(x+1)^2", "x^2+2x+1"), ("\\{1,2\\}", "\\{2,1\\}")],
)
def test_equivalent_forms_are_accepted(gold, prediction):
    doc = {"problem": "p", "answer": gold}
    assert load_task("math500").score(doc, f"so $\\boxed{{{prediction}}}$") == 1.0


@pytest.mark.parametrize(("gold", "prediction"), [("\\frac{1}{2}", "0.25"), ("2\\sqrt{2}", "\\sqrt{2}"), ("3", "x")])
def test_different_answers_are_rejected(gold, prediction):
    assert Math500().score({"problem": "p", "answer": gold}, f"$\\boxed{{{prediction}}}$") == 0.0


def test_only_the_last_boxed_answer_counts():
    doc = {"problem": "p", "answer": "7"}
    assert Math500().score(doc, "First $\\boxed{7}$, no wait: $\\boxed{8}$.") == 0.0
    assert Math500().score(doc, "First $\\boxed{8}$, no wait: $\\boxed{7}$.") == 1.0
    assert Math500().score(doc, "The answer is 7.") == 0.0  # no box, no answer


@pytest.mark.parametrize(
    ("text", "boxed"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{a} then \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\fbox{x^{2}}", "x^{2}"),
        ("our answer is $\\boxed 2$.", "2"),
        ("\\boxed{unclosed", None),
        ("no box at all", None),
    ],
)
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


def test_scoring_works_off_the_main_thread_and_from_several_threads_at_once():
    task = Math500()
    docs = sample_of(task, 12)
    completions = [f"$\\boxed{{{doc['answer']}{'+1' * (i % 2)}}}$" for i, doc in enumerate(docs)]
    with ThreadPoolExecutor(4) as pool:
        scores = list(pool.map(task.score, docs, completions))
    assert scores == [1.0, 0.0] * 6


def test_a_check_past_the_time_limit_counts_as_wrong_and_the_worker_recovers():
    verifier = Verifier(timeout_s=1.0)
    try:
        assert verifier.equivalent("2", "2^{2^{2^{2^{30}}}}") is False  # sympy would evaluate this for ever
        assert verifier.pool is None
        assert verifier.equivalent("\\frac{1}{2}", "0.5") is True
    finally:
        verifier.stop()


def test_prompt_asks_for_a_boxed_answer_and_few_shot_uses_train_solutions():
    doc = Math500().docs()[0]
    (message,) = Math500().prompt(doc)
    assert doc["problem"] in message["content"] and "\\boxed{}" in message["content"]
    messages = Math(num_fewshot=2).prompt(doc)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    train_solutions = {d["solution"] for d in Math().docs("train")}
    assert all(m["content"] in train_solutions for m in messages[1:4:2])
