"""The one identity of an experiment: seeds differ in experiment_key only, builds in build_key."""

from __future__ import annotations

import json
from pathlib import Path

from harness.experiment import Experiment, build_key, experiment_key, record_experiment, settings_key
from harness.records import RunRecord

ROOT = Path(__file__).resolve().parents[1]


def _experiment(**change: object) -> Experiment:
    fields = {
        "pair": "tiny",
        "build": {"models": {"teacher": {"weights_sha256": "a"}}, "data": {}},
        "method": "soft",
        "method_params": {"temperature": 1.0},
        "train_config": {"lr": 3e-3, "seed": 0},
        "seed": 0,
    }
    return Experiment.of(**(fields | change))  # type: ignore[arg-type]


def test_seed_is_its_own_field_and_only_changes_the_run_identity() -> None:
    one, other = _experiment(seed=0), _experiment(seed=1, train_config={"lr": 3e-3, "seed": 1})
    assert "seed" not in one.train_config
    assert experiment_key(one) != experiment_key(other)
    assert settings_key(one) == settings_key(other)
    assert build_key(one) == build_key(other)


def test_settings_and_builds_are_told_apart() -> None:
    base = _experiment()
    assert settings_key(base) != settings_key(_experiment(train_config={"lr": 6e-3}))
    assert settings_key(base) != settings_key(_experiment(method_params={"temperature": 2.0}))
    rebuilt = _experiment(build={"models": {"teacher": {"weights_sha256": "b"}}, "data": {}})
    assert build_key(base) != build_key(rebuilt) and settings_key(base) != settings_key(rebuilt)
    assert experiment_key(base) == experiment_key(_experiment())


def test_a_records_json_and_the_record_read_from_it_state_one_experiment() -> None:
    records = [json.loads(p.read_text()) for p in sorted((ROOT / "results" / "runs").glob("tiny-*.json"))]
    assert records
    for record in records:
        experiment = record_experiment(record)
        assert RunRecord.from_dict(record).experiment() == experiment
        assert experiment.build["models"] == record["models"] and experiment.seed == record["seed"]
    by_setting: dict[str, set[int]] = {}
    for experiment in map(record_experiment, records):
        by_setting.setdefault(settings_key(experiment), set()).add(experiment.seed)
    assert any(len(seeds) >= 3 for seeds in by_setting.values())  # seeds of one setting share its key
