"""`arith`: synthetic GSM8K-style word problems (two-number add/subtract, varied phrasing, exact answers).

Records have GSM8K's fields: `question`, and `answer` = worked line + `#### N`. Splits are generated
deterministically from fixed seeds; no test question text appears in the train split.
"""

from __future__ import annotations

import random
import re
from functools import cache

from tasks.base import Doc, Messages, Task, register_task

NAMES = ("Tom", "Ana", "Li", "Sam", "Maya", "Omar", "Kim", "Ravi", "Eva", "Ben", "Zoe", "Ali")
OBJECTS = ("apples", "books", "coins", "cards", "pens", "stamps", "shells", "marbles")
ADD_TEMPLATES = (
    "{n} has {a} {o}. {n} buys {b} more. How many {o} does {n} have now?",
    "There are {a} {o} in a box. {n} puts {b} more in the box. How many {o} are in the box?",
    "{n} read {a} pages on Monday and {b} pages on Tuesday. How many pages did {n} read in total?",
    "A farm has {a} cows and {b} sheep. How many animals are on the farm?",
    "{n} scored {a} points in the first game and {b} points in the second. What is the total score?",
    "{n} collected {a} {o} and then found {b} more. How many {o} does {n} have?",
)
SUB_TEMPLATES = (
    "{n} had {a} {o}. {n} gave {b} to a friend. How many {o} are left?",
    "A shop had {a} {o}. It sold {b} of them. How many {o} does the shop have now?",
    "{n} has {a} dollars and spends {b} dollars. How many dollars are left?",
    "A bus carries {a} people. At the stop, {b} people get off. How many people are still on the bus?",
    "{n} baked {a} cookies and ate {b} of them. How many cookies remain?",
    "There were {a} birds on a tree. {b} flew away. How many birds are on the tree now?",
)
SPLIT_SIZES = {"train": 20000, "test": 500}
SPLIT_SEEDS = {"train": 1234, "test": 5678}
ANSWER_RE = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
NUMBER_RE = re.compile(r"-?\d[\d,]*\.?\d*")


def worked_answer(a: int, b: int, op: str) -> str:
    """A place-value worked solution, GSM8K-style: each step is a one-digit fact, the last line `#### N`."""
    if op == "+":
        tens, units = (a // 10 + b // 10) * 10, a % 10 + b % 10
        steps = f"{a} + {b} = {tens} + {units} = {tens + units}"
        result = a + b
    else:
        partial = a - (b // 10) * 10
        steps = f"{a} - {b} = {partial} - {b % 10} = {partial - b % 10}"
        result = a - b
    return f"{steps}\n#### {result}"


def make_problem(rng: random.Random) -> Doc:
    """One word problem with its worked answer."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if rng.random() < 0.5:
        template, op = rng.choice(ADD_TEMPLATES), "+"
    else:
        a, b = max(a, b), min(a, b)
        template, op = rng.choice(SUB_TEMPLATES), "-"
    question = template.format(n=rng.choice(NAMES), o=rng.choice(OBJECTS), a=a, b=b)
    return {"question": question, "answer": worked_answer(a, b, op)}


@cache
def generate_split(split: str) -> tuple[Doc, ...]:
    """The deterministic records of `split` ('train' or 'test'); test questions never occur in train."""
    rng = random.Random(SPLIT_SEEDS[split])
    excluded = {doc["question"] for doc in generate_split("test")} if split == "train" else set()
    docs: list[Doc] = []
    seen: set[str] = set()
    while len(docs) < SPLIT_SIZES[split]:
        doc = make_problem(rng)
        if doc["question"] in seen or doc["question"] in excluded:
            continue
        seen.add(doc["question"])
        docs.append(doc)
    return tuple(docs)


def gold_answer(doc: Doc) -> str:
    return ANSWER_RE.search(doc["answer"]).group(1)


def strict_answer(completion: str) -> str | None:
    """The number after the first `#### `, as GSM8K's strict match reads it."""
    match = ANSWER_RE.search(completion)
    return match.group(1).replace(",", "") if match else None


def flexible_answer(completion: str) -> str | None:
    """The last number in the completion."""
    numbers = NUMBER_RE.findall(completion)
    return numbers[-1].replace(",", "").rstrip(".") if numbers else None


@register_task("arith")
class Arith(Task):
    primary_metric = "exact_match"
    max_new_tokens = 32
    stop = ("\n\n",)

    def docs(self, split: str = "test") -> list[Doc]:
        return [dict(doc) for doc in generate_split(split)]

    def prompt(self, doc: Doc) -> Messages:
        return [{"role": "user", "content": doc["question"]}]

    def reference(self, doc: Doc) -> str:
        return doc["answer"]

    def extract(self, completion: str) -> str | None:
        return strict_answer(completion)

    def metrics(self, doc: Doc, completion: str) -> dict[str, float]:
        gold = gold_answer(doc)
        return {
            "exact_match": float(strict_answer(completion) == gold),
            "flexible_match": float(flexible_answer(completion) == gold),
        }
