"""`codealpaca`: the shipped Python subset of Code Alpaca, its licence stated, and its use as a train task only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kdcore.errors import HarnessError
from tasks import load_task
from tasks.benchmarks.codealpaca import is_python, python_subset
from tasks.data import DATA_DIR, load_docs

SHARED = Path("/work/shared/data/codealpaca")


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared Code Alpaca files are not on this machine")
def test_shipped_file_is_the_python_subset_of_the_shared_files() -> None:
    assert python_subset(SHARED) == load_docs("codealpaca", "train")


def test_every_record_is_python_with_a_parsing_answer() -> None:
    docs = load_docs("codealpaca", "train")
    assert len(docs) == 1669
    assert len({(d["instruction"].strip(), d["input"].strip()) for d in docs}) == len(docs)
    for doc in docs:
        ast.parse(doc["output"])
        assert is_python(doc)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {
                "instruction": "Write a Python function to add two numbers.",
                "input": "",
                "output": "def f(a, b):\n    return a + b",
            },
            True,
        ),
        (
            {
                "instruction": "Write a Java method to add two numbers.",
                "input": "",
                "output": "int f(int a, int b) { return a + b; }",
            },
            False,
        ),
        (
            {
                "instruction": "What are the distinct values?",
                "input": "[3, 9, 3]",
                "output": "The distinct values are 3 and 9.",
            },
            False,
        ),
        ({"instruction": "Write a SQL query listing users.", "input": "", "output": "print(1)"}, False),
        (
            {"instruction": "Name a sorting algorithm.", "input": "", "output": "quicksort"},
            False,
        ),  # parses, no statement
    ],
)
def test_is_python(record: dict, expected: bool) -> None:
    assert is_python(record) is expected


def test_task_prompts_and_references_and_refuses_scoring() -> None:
    task = load_task("codealpaca")
    doc = next(d for d in task.docs("train") if d["input"].strip())
    (message,) = task.prompt(doc)
    assert doc["instruction"] in message["content"] and doc["input"] in message["content"]
    assert "```python" in message["content"]
    assert task.reference(doc).startswith("```python\n") and not task.scorable
    with pytest.raises(HarnessError, match="train split only"):
        task.docs("test")
    with pytest.raises(HarnessError, match="no tests"):
        task.score(doc, "x")


def test_licence_is_stated_where_the_data_is_shipped() -> None:
    assert "NonCommercial" in (DATA_DIR / "codealpaca" / "LICENSE").read_text()
    assert "CC BY-NC 4.0" in (DATA_DIR / "README.md").read_text()
    assert "CC BY-NC 4.0" in (load_task("codealpaca").__doc__ or "")
    import tasks.benchmarks.codealpaca

    assert "non-commercial" in (tasks.benchmarks.codealpaca.__doc__ or "")
