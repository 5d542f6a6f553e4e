"""`arith`'s worked answers: exact numbers and operators (bridges), varied wording (gardens), deterministic splits."""

from __future__ import annotations

import random
import re
from collections import Counter

from tasks.benchmarks.arith import CLOSE, FIRST, LINE, THEN, Arith, equivalent_answers, generate_split, make_problem


def test_every_worked_line_is_exact_arithmetic_and_ends_in_the_answer() -> None:
    for doc in generate_split("test"):
        *steps, close, final = doc["answer"].split("\n")
        values = []
        for line in steps:
            _, x, op, y, z = LINE.match(line).groups()
            assert int(z) == (int(x) + int(y) if op == "+" else int(x) - int(y)) >= 0
            values.append(int(z))
        assert final == f"#### {values[-1]}" and close in [c.format(r=values[-1]) for c in CLOSE]
        numbers = [int(n) for n in re.findall(r"\d+", doc["question"])]
        if len(steps) == 2:  # the second step works on the first step's result
            assert LINE.match(steps[1]).group(2, 4) in {
                (str(values[0]), str(numbers[2])),
                (str(numbers[2]), str(values[0])),
            }


def test_equivalent_wordings_score_alike_and_include_the_reference() -> None:
    task = Arith()
    for doc in task.docs("test")[:50]:
        wordings = equivalent_answers(doc["answer"])
        assert doc["answer"] in wordings and len(set(wordings)) == len(wordings) > 1
        assert all(task.score(doc, w) == 1.0 for w in wordings)
    one_step_sub = next(d for d in task.docs("test") if d["answer"].count("\n") == 2 and " - " in d["answer"])
    assert len(equivalent_answers(one_step_sub["answer"])) == len(FIRST) * len(CLOSE)  # no operand order to vary


def test_gardens_are_sampled_evenly_and_bridges_never_vary() -> None:
    docs = generate_split("train")
    lines = [doc["answer"].split("\n") for doc in docs]
    openings = Counter(LINE.match(line[0]).group(1) for line in lines)
    thens = Counter(LINE.match(line[1]).group(1) for line in lines if len(line) == 4)
    closes = Counter(re.sub(r"\d+", "{r}", line[-2]) for line in lines)
    for counts, options in ((openings, FIRST), (thens, THEN), (closes, CLOSE)):
        assert set(counts) == set(options)
        assert max(counts.values()) < 1.2 * min(counts.values())  # evenly drawn
    additions = [(doc, m) for doc in docs if (m := LINE.match(doc["answer"].split("\n")[0])).group(3) == "+"]
    asked = [(re.findall(r"\d+", doc["question"])[:2], m.group(2, 4)) for doc, m in additions]
    distinct = [(tuple(q), pair) for q, pair in asked if q[0] != q[1]]
    assert all(sorted(q) == sorted(pair) for q, pair in asked)
    assert (
        0.45 < sum(q != pair for q, pair in distinct) / len(distinct) < 0.55
    )  # operand order of an addition is a garden too


def test_splits_are_deterministic_and_disjoint() -> None:
    first = [make_problem(random.Random(7)) for _ in range(3)]
    assert first == [make_problem(random.Random(7)) for _ in range(3)]
    train, test = generate_split("train"), generate_split("test")
    assert (len(train), len(test)) == (20000, 500)
    assert not {d["question"] for d in train} & {d["question"] for d in test}
