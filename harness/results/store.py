"""The records a results dir holds, as the leaderboard reads them: loaded, validated, and a rerun of one
experiment superseding the earlier record."""

from __future__ import annotations

from pathlib import Path

from harness.records import RunRecord, load_records
from harness.results.groups import run_keys


def validate(record: RunRecord) -> None:
    """Raise ValueError when a record lacks what the leaderboard needs beyond what every record has (its
    types and ranges are checked on load, harness.records.check_values)."""
    if record.pinned and set(record.models) != {"teacher", "student"}:
        raise ValueError("models must name the teacher and the student")


def usable_records(results_dir: Path) -> tuple[list[RunRecord], list[str]]:
    """Records that load and validate, sorted by run id, and one problem line per file skipped.

    A run repeated with the same build, method, settings and seed replaces the earlier one (latest `created`
    wins, then the larger run id), so a re-run never counts as an extra seed; runs of different builds never
    replace one another.
    """
    loaded, problems = load_records(results_dir)
    latest: dict[tuple[str, str, str, str, int], RunRecord] = {}
    for record in loaded:
        try:
            validate(record)
        except ValueError as err:
            problems.append(f"{record.run_id}.json: skipped ({err})")
            continue
        slot = (record.pair, *run_keys(record), record.method, record.seed)
        have = latest.get(slot)
        if have is not None and (have.created, have.run_id) >= (record.created, record.run_id):
            record, have = have, record
        if have is not None:
            problems.append(f"{have.run_id}.json: skipped (superseded by {record.run_id}.json, same build and seed)")
        latest[slot] = record
    return sorted(latest.values(), key=lambda r: r.run_id), sorted(problems)
