"""What a run compares, in the canonical form its record states, and the one identity of that experiment.

An experiment's fields: `pair` (its name), `build` (what the pair is made of: the pinned models and data, plus the
trial limits of a trial run; an unpinned legacy record states only its model references and doc limit),
`method`, `method_params` (every parameter, defaults resolved), `train_config` (the training and generation
settings that can change a result; the seed is its own field) and `seed`.

`experiment_key` is the identity every part of the harness uses for "the same run"; `settings_key` is the same
identity without the seed (the runs that are seeds of one setting); `build_key` identifies the pair's build alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.cache import cache_key

FIELDS = ("pair", "build", "method", "method_params", "train_config", "seed")
SETTINGS_CHARS = 8  # shown in tables and accepted by `compare`
BUILD_CHARS = 6


def experiment_fields(
    *,
    pair: str,
    build: Mapping[str, Any],
    method: str,
    method_params: Mapping[str, Any],
    train_config: Mapping[str, Any],
    seed: int,
) -> dict[str, Any]:
    """The canonical experiment: the fields above, the seed taken out of `train_config` into its own field."""
    train = {k: v for k, v in train_config.items() if k != "seed"}
    return {
        "pair": pair,
        "build": dict(build),
        "method": method,
        "method_params": dict(method_params),
        "train_config": train,
        "seed": int(seed),
    }


def experiment_key(experiment: Mapping[str, Any]) -> str:
    """The identity of one run: equal for two runs exactly when they are repeats of one experiment."""
    return cache_key({k: experiment[k] for k in FIELDS})


def settings_key(experiment: Mapping[str, Any]) -> str:
    """The identity of the experiment's setting: its seeds share it."""
    return cache_key({k: experiment[k] for k in FIELDS if k != "seed"})[:SETTINGS_CHARS]


def build_key(experiment: Mapping[str, Any]) -> str:
    """The identity of the pair's build (weights, tokenizers, data) the experiment ran on."""
    return cache_key({"pair": experiment["pair"], "build": experiment["build"]})[:BUILD_CHARS]


def record_experiment(record: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment a record (its JSON) states: its `experiment` block, or for a record written without one, the
    same fields read from its legacy layout (build: pinned models and data, plus the trial limits; a schema-1
    record, which pins nothing, gives its model references and doc limit, marked unpinned)."""
    if "experiment" in record:
        return dict(record["experiment"])
    training = record.get("training") or {}
    train_config = record.get("train_config") or {}
    if record.get("schema_version", 1) >= 2:
        build = {"models": record["models"], "data": record["data"]}
        if training.get("trial"):
            build["trial"] = training["trial"]
    else:
        references = {"teacher": record.get("teacher"), "student": record.get("student")}
        build = {"unpinned": True, **references, "limit": train_config.get("limit")}
    return experiment_fields(
        pair=record["pair"],
        build=build,
        method=record["method"],
        method_params=record.get("method_params") or {},
        train_config=train_config,
        seed=record["seed"],
    )
