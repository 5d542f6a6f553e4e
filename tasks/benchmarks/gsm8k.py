"""`gsm8k`: grade-school math word problems, scored exactly as lm-evaluation-harness 0.4 scores them.

The extraction and normalisation copy lm-eval's `tasks/gsm8k/gsm8k.yaml` (version 3.0): `strict_match` reads the
number after `#### `, `flexible_match` the last number-like span; both sides are then stripped of commas, `$`,
everything up to the last `#### ` and a trailing period, lower-cased and compared as strings. `tests/test_gsm8k.py`
runs lm-eval's own filters on the same completions. These functions are the project's only GSM8K-style extractor
(`arith` uses them too).
"""

from __future__ import annotations

import re

from kdcore.errors import unknown_choice
from tasks.base import Doc, Messages, Task, register_task
from tasks.data import DATA_SOURCES, fewshot_docs, load_docs

STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORED_RES = tuple(re.compile(pattern) for pattern in (",", r"\$", r"(?s).*#### ", r"\.$"))
INSTRUCTION = "Solve the problem step by step. End with a final line of the form '#### N', where N is the number."


def normalize(text: str) -> str:
    """lm-eval's gsm8k `exact_match` normalisation (its `regexes_to_ignore`, then lower case)."""
    for pattern in IGNORED_RES:
        text = pattern.sub("", text)
    return text.lower()


def strict_answer(completion: str) -> str | None:
    """The number after the first `#### ` (lm-eval's `strict-match` filter); None when there is none."""
    match = STRICT_RE.search(completion)
    return match.group(1).strip() if match else None


def flexible_answer(completion: str) -> str | None:
    """The last number-like span (lm-eval's `flexible-extract` filter); None when there is none."""
    matches = FLEXIBLE_RE.findall(completion)
    if not matches:
        return None
    return next(group for group in matches[-1] if group).strip()


EXTRACTORS = {"strict_match": strict_answer, "flexible_match": flexible_answer}


def normalized_answer(completion: str, metric: str) -> str | None:
    """The answer `metric` ('strict_match' or 'flexible_match') reads from `completion`, normalised; None if none."""
    answer = EXTRACTORS[metric](completion)
    return None if answer is None else normalize(answer)


def answer_matches(gold_answer: str, completion: str) -> dict[str, float]:
    """`strict_match` and `flexible_match` of `completion` against a GSM8K-style worked answer (`... #### N`)."""
    gold = normalize(gold_answer)
    return {metric: float(normalized_answer(completion, metric) == gold) for metric in EXTRACTORS}


def question_prompt(question: str) -> str:
    return f"{question}\n\n{INSTRUCTION}"


@register_task("gsm8k")
class GSM8K(Task):
    """GSM8K test (1319) and train (7473). Primary metric `flexible_match` (chat models rarely write `####`)."""

    primary_metric = "flexible_match"
    max_new_tokens = 512
    licence = "MIT"

    def __init__(self, *, primary_metric: str = "flexible_match", num_fewshot: int = 0, data_source: str = "shipped"):
        if primary_metric not in EXTRACTORS:
            raise unknown_choice("gsm8k primary metric", primary_metric, EXTRACTORS)
        if data_source not in DATA_SOURCES:
            raise unknown_choice("data source", data_source, DATA_SOURCES)
        self.primary_metric = primary_metric
        self.num_fewshot = num_fewshot
        self.data_source = data_source

    def docs(self, split: str = "test") -> list[Doc]:
        return load_docs("gsm8k", split, self.data_source)

    def prompt(self, doc: Doc) -> Messages:
        """Zero-shot by default; with `num_fewshot`, worked train examples as earlier chat turns."""
        messages: Messages = []
        for example in fewshot_docs("gsm8k", self.num_fewshot, self.data_source):
            messages.append({"role": "user", "content": question_prompt(example["question"])})
            messages.append({"role": "assistant", "content": self.reference(example)})
        messages.append({"role": "user", "content": question_prompt(doc["question"])})
        return messages

    def reference(self, doc: Doc) -> str:
        return doc["answer"]

    def extract(self, completion: str) -> str | None:
        return normalized_answer(completion, self.primary_metric)

    def metrics(self, doc: Doc, completion: str) -> dict[str, float]:
        return answer_matches(doc["answer"], completion)
