"""The one identity of an experiment: seeds differ in experiment_key only, builds in build_key."""

from __future__ import annotations

from harness.experiment import build_key, experiment_fields, experiment_key, settings_key


def _experiment(**change: object) -> dict:
    fields = {
        "pair": "tiny",
        "build": {"models": {"teacher": {"weights_sha256": "a"}}, "data": {}},
        "method": "soft",
        "method_params": {"temperature": 1.0},
        "train_config": {"lr": 3e-3, "seed": 0},
        "seed": 0,
    }
    return experiment_fields(**(fields | change))  # type: ignore[arg-type]


def test_seed_is_its_own_field_and_only_changes_the_run_identity() -> None:
    one, other = _experiment(seed=0), _experiment(seed=1, train_config={"lr": 3e-3, "seed": 1})
    assert "seed" not in one["train_config"]
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
