"""Evaluation: prompts -> generator -> task metrics, with a per-sample log that can be re-scored later.

Each task's log is JSON lines: `{"doc_id", "prompt", "completion", "extracted", "score", "metrics"}`
(with `--samples n`: `completions` and `samples` hold all n, `completion` the first), so a score can be
audited, and re-scored with a changed scorer without generating again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.io import atomic_write_text
from harness.records import TaskScore
from tasks.base import Doc, Messages, Task, load_task
from tasks.generation import Generator, make_generator


def _summarise(task: Task, rows: list[dict], samples: str | None) -> TaskScore:
    names = sorted({name for row in rows for name in row["metrics"]})
    metrics = {name: sum(row["metrics"].get(name, 0.0) for row in rows) / max(len(rows), 1) for name in names}
    return TaskScore(score=metrics.get(task.primary_metric, 0.0), n=len(rows), metrics=metrics, samples=samples)


def _score_rows(task: Task, docs: list[Doc], rows: list[dict]) -> list[dict]:
    """Score every completion of every row in one batch; each row's metrics combine its samples."""
    completions = [row.get("completions") or [row["completion"]] for row in rows]
    flat_docs = [doc for doc, outs in zip(docs, completions, strict=True) for _ in outs]
    flat = task.metrics_batch(flat_docs, [c for outs in completions for c in outs])
    scored, start = [], 0
    for row, outs in zip(rows, completions, strict=True):
        samples = flat[start : start + len(outs)]
        start += len(outs)
        metrics = task.combine(samples) if len(outs) > 1 else samples[0]
        extra = {"samples": samples} if len(outs) > 1 else {}
        scored.append(
            {
                **row,
                **extra,
                "extracted": task.extract(outs[0]),
                "score": metrics[task.primary_metric],
                "metrics": metrics,
            }
        )
    return scored


def evaluate_task(
    task: Task,
    generator: Generator,
    render: Callable[[Messages], str],
    *,
    limit: int | None = None,
    seed: int = 0,
    samples: int = 1,
    temperature: float = 0.0,
    samples_path: Path | None = None,
    samples_ref: str | None = None,
) -> TaskScore:
    """Decode the first `limit` test docs of `task` (greedy, or `samples` completions each at `temperature`) and
    score them; log every sample to `samples_path`."""
    docs = task.docs("test")[:limit]
    prompts = [render(task.prompt(doc)) for doc in docs]
    completions = generator.generate(
        prompts, max_new_tokens=task.max_new_tokens, temperature=temperature, stop=task.stop, seed=seed, n=samples
    )
    rows = [
        {"doc_id": i, "prompt": prompt, "completion": outs[0], **({"completions": outs} if samples > 1 else {})}
        for i, (prompt, outs) in enumerate(zip(prompts, completions, strict=True))
    ]
    rows = _score_rows(task, docs, rows)
    if samples_path is not None:
        atomic_write_text(samples_path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return _summarise(task, rows, samples_ref)


def rescore(samples_path: Path, task: Task, samples_ref: str | None = None) -> TaskScore:
    """Score a per-sample log again with the current scorer, without generating."""
    docs = task.docs("test")
    rows = [json.loads(line) for line in samples_path.read_text().splitlines() if line.strip()]
    rows = _score_rows(task, [docs[row["doc_id"]] for row in rows], rows)
    atomic_write_text(samples_path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return _summarise(task, rows, samples_ref)


def evaluate_model(
    task_names: list[str],
    model_ref: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    render: Callable[[Messages], str],
    samples_dir: Path,
    results_dir: Path,
    backend: str = "auto",
    dtype: str = "float32",
    limit: int | None = None,
    seed: int = 0,
    samples: int = 1,
    temperature: float = 0.0,
    task_options: dict | None = None,
) -> dict[str, TaskScore]:
    """Scores of one model on several benchmarks, with per-sample logs `samples_dir/<task>.jsonl` (their paths in
    the scores are relative to `results_dir`)."""
    generator = make_generator(model_ref, model, tokenizer, backend=backend, dtype=dtype, seed=seed)
    scores = {}
    try:
        for name in task_names:
            path = samples_dir / f"{name}.jsonl"
            scores[name] = evaluate_task(
                load_task(name, **(task_options or {})),
                generator,
                render,
                limit=limit,
                seed=seed,
                samples=samples,
                temperature=temperature,
                samples_path=path,
                samples_ref=str(path.relative_to(results_dir)),
            )
    finally:
        generator.close()
    return scores
