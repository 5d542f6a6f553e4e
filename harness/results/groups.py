"""Runs grouped into rows: one group per build of a pair, method and setting (its seeds), with a stable id
(harness.experiment.settings_key) and a display label naming the settings that differ from the method's other groups
on that build; resolving the names `compare` and `--baseline` take."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.experiment import build_key, settings_key
from harness.records import RunRecord
from kdcore.errors import HarnessError, unknown_choice

TUNING = "tuning"  # the train_config key `harness tune`'s choice is recorded under


@dataclass
class Group:
    """The runs of one setting of a method on one build of a pair (its seeds)."""

    pair: str
    method: str
    key: str
    settings: dict[str, Any]
    runs: list[RunRecord]
    label: str = ""
    build: str = ""

    @property
    def trial(self) -> bool:
        """Runs of a budget other than their pair's (harness.trial): never in a build's main table."""
        return any(run.training.trial for run in self.runs)


def run_keys(record: RunRecord) -> tuple[str, str]:
    """The run's build id and settings id (harness.experiment)."""
    experiment = record.experiment()
    return build_key(experiment), settings_key(experiment)


def show_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _label(group: Group, siblings: list[Group]) -> str:
    """The method name, plus the settings that differ from its siblings (same build and method)."""
    if len(siblings) == 1:
        return group.method
    parts = []
    for section in ("method_params", "train_config"):
        keys = sorted({k for g in siblings for k in g.settings[section]})
        for k in (k for k in keys if k != TUNING):  # tuned rows say so in their own column
            values = {show_value(g.settings[section].get(k)) for g in siblings}
            if len(values) > 1 and k in group.settings[section]:
                parts.append(f"{k}={show_value(group.settings[section][k])}")
    return f"{group.method} ({', '.join(parts)})"


def group_runs(records: Iterable[RunRecord]) -> list[Group]:
    """Group runs by (pair, build, method, settings key), labelled, sorted by pair, build then label."""
    groups: dict[tuple[str, str, str, str], Group] = {}
    for record in records:
        experiment = record.experiment()  # once per record: it serialises the whole record
        build, key = build_key(experiment), settings_key(experiment)
        settings = {"method_params": experiment.method_params, "train_config": experiment.train_config}
        group = groups.setdefault(
            (record.pair, build, record.method, key), Group(record.pair, record.method, key, settings, [], build=build)
        )
        group.runs.append(record)
    siblings: dict[tuple[str, str, str], list[Group]] = defaultdict(list)
    for group in groups.values():
        siblings[(group.pair, group.build, group.method)].append(group)
    for group in groups.values():
        group.label = _label(group, siblings[(group.pair, group.build, group.method)])
    return sorted(groups.values(), key=lambda g: (g.pair, g.build, g.label, g.key))


def build_groups(groups: list[Group], pair: str) -> list[Group]:
    """The groups of one build of a pair: `pair` is a pair name with runs of one build, or `<pair>@<build>`."""
    pair_name, _, build = pair.partition("@")
    of_pair = [g for g in groups if g.pair == pair_name]
    if not of_pair:
        raise unknown_choice("pair", pair_name, {g.pair for g in groups})
    builds = sorted({g.build for g in of_pair})
    if build:
        if build not in builds:
            raise unknown_choice(f"build of pair {pair_name!r}", build, builds)
        return [g for g in of_pair if g.build == build]
    main = sorted({g.build for g in of_pair if not g.trial})
    if len(main) == 1:  # trial runs are compared only when their build is named
        return [g for g in of_pair if g.build == main[0]]
    if len(builds) > 1:
        choices = ", ".join(f"{pair_name}@{b}" for b in builds)
        raise HarnessError(
            f"pair {pair_name!r} has runs of {len(builds)} builds (never compared across); pick one: {choices}"
        )
    return of_pair


def resolve_method(groups: list[Group], pair: str, name: str, *, kind: str = "method") -> Group:
    """The group of `pair` whose id or label is `name`, or whose method is `name` when that is unambiguous.

    `pair` is a pair name, or `<pair>@<build>` to pick one build where the pair has runs of several."""
    of_pair = build_groups(groups, pair)
    exact = [g for g in of_pair if name in (g.key, g.label)] or [g for g in of_pair if g.method == name]
    if len(exact) == 1:
        return exact[0]
    if not exact:
        raise unknown_choice(kind, name, {g.label for g in of_pair})
    labels = ", ".join(f"{g.key} ({g.label})" for g in exact)
    raise HarnessError(f"{kind} {name!r} has several settings on pair {pair!r}; pick one by id: {labels}")
