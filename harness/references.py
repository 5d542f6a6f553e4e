"""Reference scores: a model's own scores on a pair's benchmarks (the teacher's, the student's before
distillation), evaluated once per (model identity, evaluation settings) and cached.

The cache entry lives in `cache_root()/reference_scores/<key>/` (scores.json and the per-sample logs); each
results dir that uses it gets a copy of the logs under `samples/references/<key>/`, and the scores returned
point there, so a record's reference scores can be audited and bootstrapped from the results dir alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from harness.cache import cache_key, cache_root
from kdcore.io import atomic_write_bytes, atomic_write_json
from kdcore.progress import console
from kdcore.scores import TaskScore

REFERENCE_SAMPLES = "samples/references"

Evaluate = Callable[[Path, str], "dict[str, TaskScore] | None"]


def reference_key(identity: dict[str, Any], settings: dict[str, Any]) -> str:
    """The cache key of a model's reference evaluation: its identity (harness.identity.model_identity) and the
    evaluation settings (harness.identity.eval_settings)."""
    return cache_key({"model": identity, "settings": settings})


def reference_scores(
    identity: dict[str, Any],
    settings: dict[str, Any],
    evaluate: Evaluate,
    results_dir: str | Path,
    *,
    label: str = "reference model",
) -> dict[str, TaskScore] | None:
    """The scores of the model `identity` under `settings`, from the cache or evaluated once by
    `evaluate(folder, key)` (which loads the model, writes its per-sample logs under `folder/samples/` with paths
    relative to `folder`, and returns the scores, or None on the processes of a launch other than the main one).

    The logs are copied to `<results_dir>/samples/references/<key>/` and the returned scores point there.
    None when `evaluate` gave None."""
    key = reference_key(identity, settings)
    folder = cache_root() / "reference_scores" / key
    stored = folder / "scores.json"
    if stored.exists():
        scores = {k: TaskScore(**v) for k, v in json.loads(stored.read_text()).items()}
    else:
        console.print(f"[bold]Evaluating the {label}[/] (once; cached)")
        scores = evaluate(folder, key)
        if scores is None:
            return None
        atomic_write_json(stored, {k: asdict(v) for k, v in scores.items()})
    return {name: _published(score, folder, Path(results_dir), key) for name, score in scores.items()}


def _published(score: TaskScore, folder: Path, results_dir: Path, key: str) -> TaskScore:
    """`score` with its per-sample log copied into the results dir (once) and its path pointing at the copy."""
    if score.samples is None:
        return score
    rel = f"{REFERENCE_SAMPLES}/{key}/{Path(score.samples).name}"
    target = results_dir / rel
    if not target.exists():
        atomic_write_bytes(target, (folder / score.samples).read_bytes())
    return replace(score, samples=rel)
