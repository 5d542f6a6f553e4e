"""Trial runs: a run whose budget differs from its pair's (`--limit`, or `--max-steps` other than the pair's) is a
trial. Its record says so (`training.trial`), it goes to a scratch results folder unless `--results-dir` names
one, and the leaderboard never puts it in a build's main table (harness.results).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.cache import cache_root
from harness.pairs import Pair, get_pair
from harness.spec import DEFAULT_RESULTS
from trainers.loop import TrainConfig

TRIAL_RESULTS = "trial-results"  # under the cache root


def pair_max_steps(pair: Pair) -> int:
    return pair.train.get("max_steps", TrainConfig.max_steps)


def trial_budget(spec: Any, pair: Pair | None = None) -> dict[str, Any] | None:
    """How the run `spec` (a RunSpec) departs from its pair's budget ({limit, max_steps, pair_max_steps}), or None
    for a full run."""
    pair = pair or get_pair(spec.pair, spec.pairs_file)
    steps = spec.train_overrides.get("max_steps", pair_max_steps(pair))
    if spec.limit is None and steps == pair_max_steps(pair):
        return None
    return {"limit": spec.limit, "max_steps": steps, "pair_max_steps": pair_max_steps(pair)}


def trial_results_dir() -> Path:
    return cache_root() / TRIAL_RESULTS


def results_dir_for(specs: list[Any], given: Path | None) -> Path:
    """Where runs of `specs` write: `given` (`--results-dir`) when set, else the scratch folder when one of them is
    a trial, else `results`."""
    if given is not None:
        return given
    return trial_results_dir() if any(trial_budget(spec) for spec in specs) else DEFAULT_RESULTS
