"""What a run compares, in the canonical form its record states, and the one identity of that experiment.

An `Experiment`'s fields: `pair` (its name), `build` (what the pair is made of: the pinned models and data, plus the
trial limits of a trial run; an unpinned legacy record states only its model references and doc limit),
`method`, `method_params` (every parameter, defaults resolved), `train_config` (the training and generation
settings that can change a result; the seed is its own field) and `seed`.

`experiment_key` is the identity every part of the harness uses for "the same run"; `settings_key` is the same
identity without the seed (the runs that are seeds of one setting); `build_key` identifies the pair's build alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.cache import cache_key

FIELDS = ("pair", "build", "method", "method_params", "train_config", "seed")
SETTINGS_CHARS = 8  # shown in tables and accepted by `compare`
BUILD_CHARS = 6


@dataclass(frozen=True)
class Experiment:
    """What one run compares, in canonical form: the fields above, each as a record's JSON holds it (the seed out
    of `train_config`, in its own field). Build one with `Experiment.of`; its identity is `experiment_key`."""

    pair: str
    build: dict[str, Any]
    method: str
    method_params: dict[str, Any]
    train_config: dict[str, Any]
    seed: int

    @classmethod
    def of(
        cls,
        *,
        pair: str,
        build: Mapping[str, Any],
        method: str,
        method_params: Mapping[str, Any],
        train_config: Mapping[str, Any],
        seed: int,
    ) -> Experiment:
        train = {k: v for k, v in train_config.items() if k != "seed"}
        as_json = json.loads(json.dumps({"build": build, "method_params": method_params, "train_config": train}))
        return cls(pair=pair, method=method, seed=int(seed), **as_json)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


def experiment_key(experiment: Experiment) -> str:
    """The identity of one run: equal for two runs exactly when they are repeats of one experiment."""
    return cache_key(experiment.to_dict())


def settings_key(experiment: Experiment) -> str:
    """The identity of the experiment's setting: its seeds share it."""
    return cache_key({k: v for k, v in experiment.to_dict().items() if k != "seed"})[:SETTINGS_CHARS]


def build_key(experiment: Experiment) -> str:
    """The identity of the pair's build (weights, tokenizers, data) the experiment ran on."""
    return cache_key({"pair": experiment.pair, "build": experiment.build})[:BUILD_CHARS]


def record_experiment(record: Mapping[str, Any]) -> Experiment:
    """The experiment a record (its JSON) states: build = its pinned models and data, plus a trial's limits; a
    schema-1 record, which pins nothing, gives its model references and doc limit, marked unpinned."""
    training = record.get("training") or {}
    train_config = record.get("train_config") or {}
    if record.get("schema_version", 1) >= 2:
        build = {"models": record["models"], "data": record["data"]}
        if training.get("trial"):
            build["trial"] = training["trial"]
    else:
        references = {"teacher": record.get("teacher"), "student": record.get("student")}
        build = {"unpinned": True, **references, "limit": train_config.get("limit")}
    return Experiment.of(
        pair=record["pair"],
        build=build,
        method=record["method"],
        method_params=record.get("method_params") or {},
        train_config=train_config,
        seed=record["seed"],
    )
