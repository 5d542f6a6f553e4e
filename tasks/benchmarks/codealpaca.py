"""`codealpaca`: Python coding instructions from Code Alpaca, a training task (distillation prompts) with no tests.

LICENCE: the data is CC BY-NC 4.0 (non-commercial use only; `tasks/data/codealpaca/LICENSE`). A model distilled
on it inherits that restriction as far as the licence reaches; use another train task for commercial work.

The shipped file `tasks/data/codealpaca/python.jsonl` is the Python part of the two Code Alpaca files in the
project's shared data (`code_alpaca_2k.json`, `new_codealpaca.json`), chosen by `is_python` and deduplicated on
(instruction, input) by `python_subset`; each record keeps `instruction`, `input`, `output` and the file it came
from. It has a train split only: Code Alpaca answers carry no tests, so nothing can be scored, and the
correctness filter of supervision (`require_correct`) cannot be used with it.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from kdcore.errors import HarnessError
from tasks.base import Doc, Messages, Task, register_task
from tasks.data import load_docs

SOURCE_FILES = ("code_alpaca_2k.json", "new_codealpaca.json")
OTHER_LANGUAGE_RE = re.compile(
    r"\b(java|javascript|typescript|c\+\+|c#|sql|mysql|html|css|php|ruby|swift|kotlin|rust|golang|go|bash|shell|"
    r"perl|scala|jquery|react|node\.?js|matlab|haskell|r language)\b",
    re.IGNORECASE,
)
PYTHON_STATEMENT_RE = re.compile(
    r"^\s*(def |class |import |from \w+ import|print\(|for .+ in .+:|while .+:|if .+:|return )", re.MULTILINE
)
INSTRUCTION = "Answer in Python, with the code in a ```python code block."


def is_python(record: Doc) -> bool:
    """A Python task: no other language named in its instruction or input, and an answer that parses as Python
    and has at least one statement (prose answers and other languages' code do not parse, or have none)."""
    if OTHER_LANGUAGE_RE.search(record["instruction"]) or OTHER_LANGUAGE_RE.search(record.get("input", "")):
        return False
    try:
        ast.parse(record["output"])
    except (SyntaxError, ValueError):
        return False
    return bool(PYTHON_STATEMENT_RE.search(record["output"]))


def python_subset(folder: Path) -> list[Doc]:
    """The records `tasks/data/codealpaca/python.jsonl` holds, rebuilt from the Code Alpaca files in `folder`."""
    records: dict[tuple[str, str], Doc] = {}
    for name in SOURCE_FILES:
        for raw in json.loads((folder / name).read_text()):
            record = {"instruction": raw["instruction"], "input": raw["input"], "output": raw["output"], "file": name}
            if is_python(record):
                records.setdefault((record["instruction"].strip(), record["input"].strip()), record)
    return list(records.values())


@register_task("codealpaca")
class CodeAlpaca(Task):
    """Code Alpaca's Python instructions (train split only; CC BY-NC 4.0, non-commercial). No tests: not scorable."""

    primary_metric = "none"
    max_new_tokens = 1024
    scorable = False
    licence = "CC BY-NC 4.0 (non-commercial)"

    def __init__(self, *, data_source: str = "shipped"):
        if data_source != "shipped":
            raise HarnessError("codealpaca is shipped only (tasks/data/codealpaca); drop --data-source hub")
        self.data_source = data_source

    def docs(self, split: str = "train") -> list[Doc]:
        if split != "train":
            raise HarnessError(f"codealpaca has a train split only (no tests to score), not {split!r}")
        return load_docs("codealpaca", "train")

    def prompt(self, doc: Doc) -> Messages:
        task = doc["instruction"] + (f"\n\nInput:\n{doc['input']}" if doc["input"].strip() else "")
        return [{"role": "user", "content": f"{task}\n\n{INSTRUCTION}"}]

    def reference(self, doc: Doc) -> str:
        return f"```python\n{doc['output'].strip()}\n```"

    def metrics(self, doc: Doc, completion: str) -> dict[str, float]:
        raise HarnessError("codealpaca has no tests: it is a training task only (see `harness tasks`)")
