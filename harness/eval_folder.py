"""`harness eval`: one evaluation (a model, its tasks and settings) in a folder of its own, never shared by two.

The default folder is `results/eval/<model>-<hash of the evaluation>`; a folder given with `--out` is marked with
`evaluation.json` (what was evaluated), and an evaluation that finds another one's marker, or scores without a
marker, there stops with a one-line error instead of overwriting it. The same evaluation again resumes or redoes its
own folder. An evaluation generates and scores (resumably, one generator for all its tasks), merges the shard logs
of a sharded one, or rescores its logs without generating.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cache import cache_key
from kdcore.errors import HarnessError
from kdcore.io import atomic_write_json
from kdcore.scores import TaskScore

if TYPE_CHECKING:
    from tasks.generation import Engine

EVAL_ROOT = Path("results") / "eval"
MARKER = "evaluation.json"


def default_folder(evaluation: dict[str, Any]) -> Path:
    """`results/eval/<model name>-<8 hex of the evaluation>`."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(str(evaluation["model"]).rstrip("/")).name) or "model"
    return EVAL_ROOT / f"{name}-{cache_key(evaluation)[:8]}"


def claim(folder: Path, evaluation: dict[str, Any]) -> None:
    """Mark `folder` as `evaluation`'s, refusing one that holds another evaluation."""
    marker = folder / MARKER
    if marker.exists():
        found = json.loads(marker.read_text())
        if found != json.loads(json.dumps(evaluation)):
            raise HarnessError(
                f"{folder} holds another evaluation (model {found.get('model')}, tasks {found.get('tasks')}); "
                "pick another --out, or leave it out for a folder of this evaluation's own"
            )
    elif (folder / "scores.json").exists():
        raise HarnessError(f"{folder} holds an evaluation of unknown settings (no {MARKER}); pick another --out")
    atomic_write_json(marker, evaluation)


def score_folder(
    evaluation: dict[str, Any],
    folder: Path,
    *,
    mode: str = "generate",
    backend: str = "auto",
    layout: Engine | None = None,
    shard: tuple[int, int] | None = None,
) -> tuple[dict[str, TaskScore], Path]:
    """Score `evaluation` (as `default_folder` takes it) in `folder`: `mode` generate (on `backend`, with the
    parallel settings and memory share of `layout`, None for one engine, the dtype and seed being the evaluation's;
    `shard` = slice i/n of the docs), merge (the shard logs) or rescore (the logs); the scores, and the scores file
    written."""
    from tasks import load_task
    from tasks.evaluate import merge_shards
    from tasks.evaluate import rescore as rescore_log

    names, options = evaluation["tasks"], evaluation["task_options"]
    if mode == "merge":
        scores = {name: merge_shards(folder / "samples", name, folder) for name in names}
    elif mode == "rescore":
        scores = {}
        for name in names:
            log = folder / "samples" / f"{name}.jsonl"
            if not log.exists():
                raise HarnessError(f"no per-sample log to rescore: {log}")
            scores[name] = rescore_log(log, load_task(name, **options[name]), str(log.relative_to(folder)))
    else:
        claim(folder, evaluation)
        scores = _generated(evaluation, folder, backend, layout, shard)
    scores_file = folder / (f"scores.shard-{shard[0]}-of-{shard[1]}.json" if shard else "scores.json")
    atomic_write_json(scores_file, {k: asdict(v) for k, v in scores.items()})
    return scores, scores_file


def _generated(
    evaluation: dict[str, Any],
    folder: Path,
    backend: str,
    layout: Engine | None,
    shard: tuple[int, int] | None,
) -> dict[str, TaskScore]:
    """The evaluation's scores, generating with one generator (one engine start) for all its tasks; resumable."""
    from harness.models import load_model, load_tokenizer, resolve
    from tasks.backends import make_generator
    from tasks.evaluate import evaluate_model
    from tasks.generation import Engine, render_prompt

    model, settings = evaluation["model"], evaluation["settings"]
    path = resolve(model)
    tokenizer = load_tokenizer(path)
    engine = replace(layout or Engine(), dtype=settings["dtype"], seed=settings["seed"])
    generator = make_generator(path, lambda: load_model(model, settings["dtype"]), backend=backend, engine=engine)
    try:
        return evaluate_model(
            evaluation["tasks"],
            generator,
            render=lambda messages: render_prompt(tokenizer, messages),
            samples_dir=folder / "samples",
            results_dir=folder,
            limit=settings["limit"],
            seed=settings["seed"],
            samples=settings["samples"],
            temperature=settings["temperature"],
            task_options=evaluation["task_options"],
            resume_key=cache_key(settings | {"backend": backend, "model": model}),
            shard=shard,
        )
    finally:
        generator.close()
