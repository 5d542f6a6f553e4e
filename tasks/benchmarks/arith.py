"""`arith`: synthetic GSM8K-style word problems: one or two steps of one-digit addition and subtraction, varied
phrasing, worked answers with exact numbers and varied wording.

Records have GSM8K's fields: `question`, and `answer` = one worked line per step, a closing line, then `#### N`.
The worked answers have *bridges* and *gardens*: the numbers, operators and results are fixed by the problem
(bridges: one right token), while each line's opening connective, the operand order of an addition and the
closing sentence are drawn per example from equivalent wordings (gardens: several right tokens). A teacher
trained on them is sharp at bridges and spread at gardens. Splits are generated deterministically from fixed
seeds; no test question text appears in the train split.
"""

from __future__ import annotations

import itertools
import random
import re
from functools import cache

from tasks.base import Doc, Messages, Task, register_task
from tasks.benchmarks.gsm8k import answer_matches, normalized_answer

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
# Gardens: equivalent openings of a worked line and of the closing sentence.
FIRST = ("", "First, ", "We have ", "Start with ")
THEN = ("Then ", "Next, ", "After that, ", "Now ")
CLOSE = ("So the answer is {r}.", "That makes {r}.", "So there are {r}.", "The result is {r}.")
SPLIT_SIZES = {"train": 20000, "test": 500}
SPLIT_SEEDS = {"train": 1234, "test": 5678}


def step(rng: random.Random, opening: str, x: int, op: str, y: int) -> str:
    """One worked line `x op y = z` after `opening`; an addition's operands come in either order (same value)."""
    if op == "+" and rng.random() < 0.5:
        x, y = y, x
    return f"{opening}{x} {op} {y} = {x + y if op == '+' else x - y}."


def make_problem(rng: random.Random) -> Doc:
    """One word problem with its worked answer: one or two steps of one-digit addition or subtraction."""
    kind = rng.randrange(4)
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
    if kind == 1 or kind == 3:
        a += b  # a - b with a one-digit answer
    if kind == 2:
        c = min(c, a + b)
    template = (ADD, SUB, ADD_SUB, SUB_ADD)[kind]
    question = rng.choice(template).format(n=rng.choice(NAMES), o=rng.choice(OBJECTS), a=a, b=b, c=c)
    first_op = "+" if kind in (0, 2) else "-"
    middle = a + b if first_op == "+" else a - b
    lines = [step(rng, rng.choice(FIRST), a, first_op, b)]
    result = middle
    if kind >= 2:
        second_op = "-" if kind == 2 else "+"
        result = middle - c if second_op == "-" else middle + c
        lines.append(step(rng, rng.choice(THEN), middle, second_op, c))
    lines.append(rng.choice(CLOSE).format(r=result))
    return {"question": question, "answer": "\n".join([*lines, f"#### {result}"])}


LINE = re.compile(r"^(.*?)(\d+) ([+-]) (\d+) = (\d+)\.$")


def equivalent_answers(answer: str) -> list[str]:
    """Every wording of a worked answer that `make_problem` could have written for the same problem: each line's
    opening, each addition's operand order and the closing sentence varied, numbers and operators kept."""
    *steps, _close, final = answer.split("\n")
    options: list[list[str]] = []
    for index, line in enumerate(steps):
        match = LINE.match(line)
        if not match:
            raise ValueError(f"not a worked arith line: {line!r}")
        _, x, op, y, z = match.groups()
        orders = [(x, y), (y, x)] if op == "+" and x != y else [(x, y)]
        options.append([f"{o}{p} {op} {q} = {z}." for o in (FIRST if index == 0 else THEN) for p, q in orders])
    result = final.removeprefix("#### ")
    options.append([c.format(r=result) for c in CLOSE])
    return ["\n".join([*lines, final]) for lines in itertools.product(*options)]


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
    max_new_tokens = 48
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
        """GSM8K's scoring (`tasks.benchmarks.gsm8k`): `exact_match` is its strict match, `flexible_match` its
        flexible one."""
        matches = answer_matches(doc["answer"], completion)
        return {"exact_match": matches["strict_match"], "flexible_match": matches["flexible_match"]}
