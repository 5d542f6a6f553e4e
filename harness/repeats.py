"""Repeats: records of the same experiment (pair build, method, settings, seed) as another one."""

from __future__ import annotations

from pathlib import Path

from harness.records import RunRecord, load_records


def repeats_of(record: RunRecord, results_dir: str | Path) -> list[RunRecord]:
    """The other records under `results_dir` of `record`'s experiment, oldest first."""
    key = record.experiment_key
    found = [r for r in load_records(results_dir)[0] if r.run_id != record.run_id]
    return [r for r in found if r.experiment_key == key]


def repeat_notes(record: RunRecord, results_dir: str | Path) -> list[str]:
    """One line per earlier record of the same experiment: `same as <id>`, and whether the scores agree."""
    notes = []
    for other in repeats_of(record, results_dir):
        same = {k: v.score for k, v in other.scores.items()} == {k: v.score for k, v in record.scores.items()}
        agreement = "same scores" if same else "scores differ"
        notes.append(
            f"same as {other.run_id} (pair build, method, settings and seed): {agreement}; "
            "the leaderboard counts the newer record once, not as another seed"
        )
    return notes
