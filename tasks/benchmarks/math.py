"""`math500` and `math`: competition problems; the answer in the last `\\boxed{}` is judged by math-verify.

Gold is the record's `answer` (MATH-500) or the last `\\boxed{}` of its `solution` (full MATH). Equivalence is
`verify(parse(gold), parse(prediction))`, gold first. math-verify's own time limits use `signal.alarm`, which fails
off the main thread, so they are switched off (`parsing_timeout=None`, `timeout_seconds=None`) and each check runs
in one long-lived worker process instead (forked, so scripts need no `__main__` guard; it never touches torch): a
check slower than `VERIFY_TIMEOUT_S` kills the worker and counts as not equivalent. This works from any thread.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import re
import threading
from multiprocessing.pool import Pool

from kdcore.errors import unknown_choice
from tasks.base import Doc, Messages, Task, register_task
from tasks.data import DATA_SOURCES, fewshot_docs, load_docs

VERIFY_TIMEOUT_S = 10.0
BOXED_RE = re.compile(r"\\(?:boxed|fbox)")
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`) in `text`; None when there is none."""
    starts = [match.end() for match in BOXED_RE.finditer(text)]
    if not starts:
        return None
    rest = text[starts[-1] :]
    if rest[:1].isspace():
        return rest.strip().split("$")[0].strip() or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for index, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:index]
    return None


def gold_answer(doc: Doc) -> str:
    """MATH-500's `answer` field, else the last `\\boxed{}` of the worked `solution` (full MATH)."""
    return doc["answer"] if "answer" in doc else last_boxed(doc["solution"])


def verify_boxed(gold: str, prediction: str) -> bool:
    """math-verify's judgement of two boxed answers, with its signal-based time limits off (runs in the worker)."""
    from math_verify import parse, verify

    return verify(
        parse(f"\\boxed{{{gold}}}", parsing_timeout=None),
        parse(f"\\boxed{{{prediction}}}", parsing_timeout=None),
        timeout_seconds=None,
    )


def quiet_math_verify() -> None:
    """Worker start-up: silence math-verify's 'timeout is disabled' warnings (we bound time) and run one check, so
    the modules it imports on first use (its LaTeX parser, sympy's) are loaded before any check is timed."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    verify_boxed("\\frac{1}{2}", "0.5")


class Verifier:
    """One forked worker process that runs `verify_boxed`, restarted after a check that runs past the limit."""

    def __init__(self, timeout_s: float = VERIFY_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.pool: Pool | None = None
        self.lock = threading.Lock()  # one check at a time (the worker is single anyway), safe from any thread

    def start(self) -> Pool:
        if self.pool is None:
            self.pool = multiprocessing.get_context("fork").Pool(1, initializer=quiet_math_verify)
            self.pool.apply(bool)  # wait for start-up, so its imports do not count against the limit
        return self.pool

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def equivalent(self, gold: str, prediction: str) -> bool:
        """True when math-verify judges `prediction` equal to `gold` within the time limit."""
        with self.lock:
            result = self.start().apply_async(verify_boxed, (gold, prediction))
            try:
                return result.get(timeout=self.timeout_s)
            except multiprocessing.TimeoutError:
                self.stop()
                return False


VERIFIER = Verifier()
atexit.register(VERIFIER.stop)


class MathTask(Task):
    """MATH-style scoring shared by `math500` and `math`; `dataset` names the data set in `tasks.data`."""

    dataset = ""
    primary_metric = "math_verify"
    max_new_tokens = 1024
    licence = "MIT"

    def __init__(self, *, num_fewshot: int = 0, data_source: str = "shipped"):
        if data_source not in DATA_SOURCES:
            raise unknown_choice("data source", data_source, DATA_SOURCES)
        self.num_fewshot = num_fewshot
        self.data_source = data_source

    def docs(self, split: str = "test") -> list[Doc]:
        return load_docs(self.dataset, split, self.data_source)

    def prompt(self, doc: Doc) -> Messages:
        """Zero-shot by default; with `num_fewshot`, worked MATH train solutions as earlier chat turns."""
        messages: Messages = []
        for example in fewshot_docs(self.dataset, self.num_fewshot, self.data_source):
            messages.append({"role": "user", "content": f"{example['problem']}\n{INSTRUCTION}"})
            messages.append({"role": "assistant", "content": self.reference(example)})
        messages.append({"role": "user", "content": f"{doc['problem']}\n{INSTRUCTION}"})
        return messages

    def reference(self, doc: Doc) -> str:
        return doc["solution"]

    def extract(self, completion: str) -> str | None:
        return last_boxed(completion)

    def metrics(self, doc: Doc, completion: str) -> dict[str, float]:
        prediction = last_boxed(completion)
        return {"math_verify": float(prediction is not None and VERIFIER.equivalent(gold_answer(doc), prediction))}


@register_task("math500")
class Math500(MathTask):
    """MATH-500 (the PRM800K test subset, 500 problems); train = the MATH train set."""

    dataset = "math500"


@register_task("math")
class Math(MathTask):
    """The full MATH test set (5000 problems) and train set (7500)."""

    dataset = "math"
