"""Evaluation: prompts -> generator -> task metrics, with a per-sample log that can be re-scored later.

Each task's log is JSON lines: `{"doc_id", "prompt", "completion", "extracted", "score", "metrics"}`,
so a score can be audited, and re-scored with a changed scorer without generating again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from harness.io import atomic_write_text
from harness.records import TaskScore
from tasks.base import Doc, Messages, Task, load_task
from tasks.generation import Generator


def _summarise(task: Task, rows: list[dict], samples: str | None) -> TaskScore:
    names = sorted({name for row in rows for name in row["metrics"]})
    metrics = {name: sum(row["metrics"].get(name, 0.0) for row in rows) / max(len(rows), 1) for name in names}
    return TaskScore(score=metrics.get(task.primary_metric, 0.0), n=len(rows), metrics=metrics, samples=samples)


def _score_row(task: Task, doc: Doc, row: dict) -> dict:
    metrics = task.metrics(doc, row["completion"])
    return {
        **row,
        "extracted": task.extract(row["completion"]),
        "score": metrics[task.primary_metric],
        "metrics": metrics,
    }


def evaluate_task(
    task: Task,
    generator: Generator,
    render: Callable[[Messages], str],
    *,
    limit: int | None = None,
    seed: int = 0,
    samples_path: Path | None = None,
    samples_ref: str | None = None,
) -> TaskScore:
    """Greedy-decode the first `limit` test docs of `task` and score them; log every sample to `samples_path`."""
    docs = task.docs("test")[:limit]
    prompts = [render(task.prompt(doc)) for doc in docs]
    completions = generator.generate(prompts, max_new_tokens=task.max_new_tokens, stop=task.stop, seed=seed)
    rows = [
        _score_row(task, doc, {"doc_id": i, "prompt": prompt, "completion": outs[0]})
        for i, (doc, prompt, outs) in enumerate(zip(docs, prompts, completions, strict=True))
    ]
    if samples_path is not None:
        atomic_write_text(samples_path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return _summarise(task, rows, samples_ref)


def rescore(samples_path: Path, task_name: str, samples_ref: str | None = None) -> TaskScore:
    """Score a per-sample log again with the current scorer, without generating."""
    task = load_task(task_name)
    docs = task.docs("test")
    rows = [json.loads(line) for line in samples_path.read_text().splitlines() if line.strip()]
    rows = [_score_row(task, docs[row["doc_id"]], row) for row in rows]
    atomic_write_text(samples_path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return _summarise(task, rows, samples_ref)
