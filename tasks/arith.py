"""`arith`: synthetic GSM8K-style word problems: one or two steps of one-digit addition and subtraction, varied
phrasing, worked answers with exact numbers.

Records have GSM8K's fields: `question`, and `answer` = one worked line per step + `#### N`. Splits are generated
deterministically from fixed seeds; no test question text appears in the train split.
"""

from __future__ import annotations

import random
from functools import cache

from tasks.base import Doc, Messages, Task, register_task
from tasks.gsm8k import answer_matches, normalized_answer

NAMES = ("Tom", "Ana", "Li", "Sam", "Maya", "Omar", "Kim", "Ravi", "Eva", "Ben", "Zoe", "Ali")
OBJECTS = ("apples", "books", "coins", "cards", "pens", "stamps", "shells", "marbles")
ADD = (
    "{n} has {a} {o}. {n} buys {b} more. How many {o} does {n} have now?",
    "There are {a} {o} in a box. {n} puts {b} more in the box. How many {o} are in the box?",
    "{n} found {a} {o} on Monday and {b} {o} on Tuesday. How many {o} did {n} find in total?",
    "{n} collected {a} {o} and then got {b} more from a friend. How many {o} does {n} have?",
)
SUB = (
    "{n} had {a} {o}. {n} gave {b} to a friend. How many {o} are left?",
    "A shop had {a} {o}. It sold {b} of them. How many {o} does the shop have now?",
    "{n} had {a} {o} and lost {b} of them. How many {o} does {n} have left?",
    "There were {a} {o} on the table. {n} took {b} away. How many {o} are on the table now?",
)
ADD_SUB = (
    "{n} has {a} {o}. {n} buys {b} more, then gives {c} to a friend. How many {o} does {n} have now?",
    "A box holds {a} {o}. {n} adds {b} and later removes {c}. How many {o} are in the box?",
    "{n} picked {a} {o} in the morning and {b} in the afternoon, then lost {c}. How many {o} are left?",
)
SUB_ADD = (
    "{n} had {a} {o}, gave away {b}, and then bought {c} more. How many {o} does {n} have now?",
    "A shop had {a} {o}. It sold {b} and then received {c} more. How many {o} does the shop have?",
    "{n} had {a} {o}. {n} lost {b} but found {c} new ones. How many {o} does {n} have?",
)
SPLIT_SIZES = {"train": 20000, "test": 500}
SPLIT_SEEDS = {"train": 1234, "test": 5678}


def make_problem(rng: random.Random) -> Doc:
    """One word problem with its worked answer: one or two steps of one-digit addition or subtraction."""
    kind = rng.randrange(4)
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
    if kind == 0:
        template, lines, result = ADD, [f"{a} + {b} = {a + b}"], a + b
    elif kind == 1:
        a += b  # a - b with a one-digit answer
        template, lines, result = SUB, [f"{a} - {b} = {a - b}"], a - b
    elif kind == 2:
        c = min(c, a + b)
        template, lines, result = ADD_SUB, [f"{a} + {b} = {a + b}", f"{a + b} - {c} = {a + b - c}"], a + b - c
    else:
        a += b
        template, lines, result = SUB_ADD, [f"{a} - {b} = {a - b}", f"{a - b} + {c} = {a - b + c}"], a - b + c
    question = rng.choice(template).format(n=rng.choice(NAMES), o=rng.choice(OBJECTS), a=a, b=b, c=c)
    return {"question": question, "answer": "\n".join([*lines, f"#### {result}"])}


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
        return normalized_answer(completion, "strict_match")

    def metrics(self, doc: Doc, completion: str) -> dict[str, float]:
        """GSM8K's scoring (`tasks.gsm8k`): `exact_match` is its strict match, `flexible_match` its flexible one."""
        matches = answer_matches(doc["answer"], completion)
        return {"exact_match": matches["strict_match"], "flexible_match": matches["flexible_match"]}
