"""Evaluation: prompts -> generator -> task metrics, with a per-sample log that can be re-scored later.

Each task's log is JSON lines: `{"doc_id", "prompt", "completion", "ended", "extracted", "score", "metrics",
"settings"}` (with `--samples n`: `completions` and `samples` hold all n, `completion` the first; `ended`: whether
each completion ended by itself rather than at its budget, which gives the `truncated` metric; `settings`: the
generation settings, which the score carries too), so a score can be
audited, and re-scored with a changed scorer without generating again. An evaluation killed part-way resumes
from its partial log, and one split into shards (`--shard i/n`, e.g. one per machine) is merged from the
shards' logs into the same log and score as an unsharded one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from kdcore.errors import HarnessError
from kdcore.io import atomic_write_text
from kdcore.progress import progress_label
from kdcore.scores import TaskScore
from tasks.base import Doc, Messages, Task, load_task
from tasks.generation import Generator
from tasks.protocol import GenerationSettings, Sampling

logger = logging.getLogger(__name__)
EVAL_CHUNK = 256  # docs generated per call: the unit of resuming and of sharding an evaluation


def _summarise(task: Task, rows: list[dict], samples: str | None) -> TaskScore:
    """The task's score over `rows`, with the generation settings its rows were made with (None for old logs)."""
    names = sorted({name for row in rows for name in row["metrics"]})
    metrics = {name: sum(row["metrics"].get(name, 0.0) for row in rows) / max(len(rows), 1) for name in names}
    settings = rows[0].get("settings") if rows else None
    return TaskScore(
        score=metrics.get(task.primary_metric, 0.0), n=len(rows), metrics=metrics, samples=samples, settings=settings
    )


def _sampling(task: Task, generation: GenerationSettings | None, samples: int, temperature: float) -> Sampling:
    """The `Sampling` for `task`: the pair's `generation` settings, else the plain arguments."""
    if generation is None:
        return Sampling(max_new_tokens=task.max_new_tokens, temperature=temperature, stop=tuple(task.stop), n=samples)
    return generation.sampling(task)


def _score_rows(task: Task, docs: list[Doc], rows: list[dict]) -> list[dict]:
    """Score every completion of every row in one batch; each row's metrics combine its samples."""
    completions = [row.get("completions") or [row["completion"]] for row in rows]
    flat_docs = [doc for doc, outs in zip(docs, completions, strict=True) for _ in outs]
    ended = [row.get("ended") or [True] * len(outs) for row, outs in zip(rows, completions, strict=True)]
    known = any("ended" in row for row in rows)  # logs written before generators reported finish reasons have none
    flat = task.score_batch(
        flat_docs, [c for outs in completions for c in outs], [e for ends in ended for e in ends] if known else None
    )
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


def log_name(task_name: str, shard: tuple[int, int] | None = None) -> str:
    """The per-sample log's file name: `<task>.jsonl`, or `<task>.shard-<i>-of-<n>.jsonl` for one shard."""
    return f"{task_name}.shard-{shard[0]}-of-{shard[1]}.jsonl" if shard else f"{task_name}.jsonl"


def shard_docs(n_docs: int, shard: tuple[int, int] | None) -> list[int]:
    """The doc ids shard `(i, n)` evaluates: chunks i, i+n, i+2n, ... of `EVAL_CHUNK` consecutive docs, so a doc
    is generated in the same chunk (the same batch) whether the evaluation is sharded, resumed or neither."""
    i, n = shard or (0, 1)
    return [d for d in range(n_docs) if (d // EVAL_CHUNK) % n == i]


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
    resume_key: str | None = None,
    shard: tuple[int, int] | None = None,
    generation: GenerationSettings | None = None,
) -> TaskScore:
    """Decode the first `limit` test docs of `task` (or shard `(i, n)` of them; greedy, or `samples` completions
    each at `temperature`; or as `generation`, a pair's protocol, says) and score them; log every sample to
    `samples_path`. The score carries the settings it was made with.

    Docs are generated `EVAL_CHUNK` at a time and each chunk's rows are appended to `<samples_path>.partial`
    (first line: `resume_key`). A later call with the same `resume_key` (same model and settings) generates only
    the docs missing there; the finished log replaces the partial one.
    """
    docs = task.docs("test")[:limit]
    wanted = shard_docs(len(docs), shard)
    partial = samples_path.with_name(samples_path.name + ".partial") if samples_path and resume_key else None
    done = _read_partial(partial, resume_key, set(wanted)) if partial else {}
    pending = [d for d in wanted if d not in done]
    sampling = _sampling(task, generation, samples, temperature)
    samples = sampling.n
    settings = {
        **(generation.to_record() if generation else {"temperature": temperature, "samples": samples}),
        "max_new_tokens": sampling.max_new_tokens,
        "stop": list(sampling.stop),
    }
    for block, ids in itertools.groupby(pending, key=lambda d: d // EVAL_CHUNK):
        chunk = list(ids)
        prompts = [render(task.prompt(docs[d])) for d in chunk]
        completions = generator.generate(prompts, sampling.seeded(seed * 1_000_003 + block))
        rows = [
            {
                "doc_id": d,
                "prompt": prompt,
                "completion": outs[0].text,
                **({"completions": [out.text for out in outs]} if samples > 1 else {}),
                "ended": [out.ended for out in outs],
                "settings": settings,
            }
            for d, prompt, outs in zip(chunk, prompts, completions, strict=True)
        ]
        rows = _score_rows(task, [docs[d] for d in chunk], rows)
        if partial:
            _append_rows(partial, resume_key, rows)
        done.update((row["doc_id"], row) for row in rows)
    rows = [done[d] for d in wanted]
    if empty := sum(not row["completion"].strip() for row in rows):
        logger.warning(
            "%s: %d of %d completions are empty (scored as wrong, kept in the log)", task.name, empty, len(rows)
        )
    if samples_path is not None:
        _write_log(samples_path, rows)
        if partial:
            partial.unlink(missing_ok=True)
    return _summarise(task, rows, samples_ref)


def rescore(samples_path: Path, task: Task, samples_ref: str | None = None) -> TaskScore:
    """Score a per-sample log again with the current scorer, without generating."""
    docs = task.docs("test")
    rows = _read_rows(samples_path)
    rows = _score_rows(task, [docs[row["doc_id"]] for row in rows], rows)
    _write_log(samples_path, rows)
    return _summarise(task, rows, samples_ref)


def merge_shards(samples_dir: Path, task_name: str, results_dir: Path, count: int | None = None) -> TaskScore:
    """Merge the per-sample logs of all shards of one task's evaluation (`<task>.shard-<i>-of-<n>.jsonl`, i = 0..n-1;
    n = `count` when given, else the one split found) into `<task>.jsonl`, ordered by doc id, and score it: the
    same log and score as an unsharded evaluation."""
    logs = sorted(samples_dir.glob(f"{task_name}.shard-*-of-{count or '*'}.jsonl"))
    counts = {int(p.name.rsplit("-of-", 1)[1].removesuffix(".jsonl")) for p in logs}
    if len(counts) != 1:
        found = ", ".join(p.name for p in logs) or "none"
        raise HarnessError(f"{task_name}: need the shard logs of exactly one split in {samples_dir}; found {found}")
    (n,) = counts
    missing = [i for i in range(n) if not (samples_dir / log_name(task_name, (i, n))).exists()]
    if missing:
        raise HarnessError(
            f"{task_name}: shard(s) {', '.join(f'{i}/{n}' for i in missing)} not finished in {samples_dir}"
        )
    rows = sorted((row for log in logs for row in _read_rows(log)), key=lambda row: row["doc_id"])
    ids = [row["doc_id"] for row in rows]
    if ids != list(range(len(ids))):
        raise HarnessError(f"{task_name}: the shard logs in {samples_dir} do not hold docs 0..{len(ids) - 1} once each")
    path = samples_dir / log_name(task_name)
    _write_log(path, rows)
    return _summarise(load_task(task_name), rows, str(path.relative_to(results_dir)))


def _write_log(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_partial(path: Path, resume_key: str, doc_ids: set[int]) -> dict[int, dict]:
    """The rows of a partial log written for `resume_key`; none when it is missing or for something else.

    Each row is stored with the sha256 of its JSON and read back only when that matches and its doc is one of
    `doc_ids`, once. The rows from the first that does not are dropped from the log (with a one-line warning; a torn
    last line, left by a process killed while writing it, silently): those docs are generated again."""
    if not path.exists():
        return {}
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("resume_key") != resume_key:
        if header is None:
            logger.warning("partial evaluation log %s has a damaged header; it is generated again", path)
        path.unlink()
        return {}
    body = lines[1:-1] if lines[-1] == "" else lines[1:]  # a last line without its newline is torn
    rows: dict[int, dict] = {}
    for number, line in enumerate(body, start=2):
        row, problem = _partial_row(line, doc_ids, rows)
        if problem is None:
            rows[row["doc_id"]] = row
            continue
        if number - 2 < len(body) - 1 or lines[-1] == "":
            logger.warning(
                "partial evaluation log %s: line %d is damaged (%s); it and the %d row(s) after it are generated again",
                path,
                number,
                problem,
                len(body) - (number - 1),
            )
        break
    if len(rows) < len(body):
        atomic_write_text(path, "".join(line + "\n" for line in [lines[0], *body[: len(rows)]]))
    return rows


def _partial_row(line: str, doc_ids: set[int], seen: dict[int, dict]) -> tuple[dict, str | None]:
    """A partial log line's row, and what is wrong with it (None when nothing is)."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as err:
        return {}, f"not JSON: {err.msg}"
    if not isinstance(entry, dict) or set(entry) != {"sha256", "row"} or not isinstance(entry["row"], dict):
        return {}, "not a row with its sha256"
    row = entry["row"]
    if entry["sha256"] != _row_digest(row):
        return row, "its sha256 does not match its content"
    doc = row.get("doc_id")
    if not isinstance(doc, int) or isinstance(doc, bool) or doc not in doc_ids or doc in seen:
        return row, f"doc_id {doc!r} is not one of this evaluation's docs, once"
    return row, None


def _row_digest(row: dict) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _append_rows(path: Path, resume_key: str, rows: list[dict]) -> None:
    """Append one chunk's rows, each with its sha256, to the partial log and flush them to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps({"sha256": _row_digest(row), "row": row}, ensure_ascii=False) + "\n" for row in rows)
    if not path.exists():
        text = json.dumps({"resume_key": resume_key}) + "\n" + text
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:  # e.g. a full disk: a torn last row is dropped on resume; name the file
        raise OSError(err.errno, err.strerror, str(path)) from err


def evaluate_model(
    task_names: list[str],
    generator: Generator,
    *,
    render: Callable[[Messages], str],
    samples_dir: Path,
    results_dir: Path,
    limit: int | None = None,
    seed: int = 0,
    samples: int = 1,
    temperature: float = 0.0,
    task_options: dict[str, dict] | None = None,
    resume_key: str | None = None,
    shard: tuple[int, int] | None = None,
    generation: GenerationSettings | None = None,
) -> dict[str, TaskScore]:
    """Scores of one model on several benchmarks (or shard `(i, n)` of their docs), all generated by one
    `generator` (one engine start for all of them; the caller closes it), with per-sample logs
    `samples_dir/<task>.jsonl` (their paths in the scores are relative to `results_dir`). `task_options`: the
    options each task is built with, by name. With `resume_key` (the model and settings), an evaluation killed
    part-way resumes from its partial logs (each task's key adds its name and options). `generation`: a pair's
    evaluation protocol (sampling, budgets, shots, thinking), which then overrides `samples` and `temperature`."""
    scores = {}
    for name in task_names:
        options = {**(task_options or {}).get(name, {}), **(generation.task_options(name) if generation else {})}
        path = samples_dir / log_name(name, shard)
        settings = generation.to_record() if generation else {}
        key = f"{resume_key}:{name}:{json.dumps([options, settings], sort_keys=True)}" if resume_key else None
        with progress_label(name):
            scores[name] = evaluate_task(
                load_task(name, **options),
                generator,
                render,
                limit=limit,
                seed=seed,
                samples=samples,
                temperature=temperature,
                samples_path=path,
                samples_ref=str(path.relative_to(results_dir)),
                resume_key=key,
                shard=shard,
                generation=generation,
            )
    return scores
