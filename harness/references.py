"""Reference scores: a model's own scores on a pair's benchmarks (the teacher's, the student's before
distillation), evaluated once per (model identity, evaluation settings) and cached.

The cache entry lives in `cache_root()/reference_scores/<key>/` (scores.json and the per-sample logs); each
results dir that uses it gets a copy of the logs under `samples/references/<key>/`, and the scores returned
point there, so a record's reference scores can be audited and compared from the results dir alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.cache import cache_key, cache_root
from kdcore.io import atomic_write_bytes
from kdcore.scores import TaskScore

REFERENCE_SAMPLES = "samples/references"

Evaluate = Callable[[Path, str], "dict[str, TaskScore] | None"]


def reference_key(identity: dict[str, Any], settings: dict[str, Any]) -> str:
    """The cache key of a model's reference evaluation: its identity (harness.identity.model_identity) and the
    evaluation settings (harness.identity.eval_settings)."""
    return cache_key({"model": identity, "settings": settings})


def reference_folder(key: str) -> Path:
    """The cache entry of reference evaluation `key`: scores.json, its build cost and the per-sample logs."""
    return cache_root() / "reference_scores" / key


def published(score: TaskScore, folder: Path, results_dir: Path, key: str) -> TaskScore:
    """`score` with its per-sample log copied into the results dir (once) and its path pointing at the copy."""
    if score.samples is None:
        return score
    rel = f"{REFERENCE_SAMPLES}/{key}/{Path(score.samples).name}"
    target = results_dir / rel
    if not target.exists():
        atomic_write_bytes(target, (folder / score.samples).read_bytes())
    return replace(score, samples=rel)
