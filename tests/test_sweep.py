"""`harness sweep`: the grid runs to the end past a failed cell, and a re-run fills only what is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness import pipeline
from harness.cli import main
from harness.pipeline import RunSpec
from harness.records import load_records
from harness.results.store import usable_records
from harness.sweep import cell_name, grid
from kdcore.errors import HarnessError


def sweep(monkeypatch: pytest.MonkeyPatch, results: Path, *extra: str, methods: str = "hard,soft") -> int:
    args = ["harness", "sweep", "--pairs", "tiny", "--methods", methods, "--seeds", "0,1", "--max-steps", "2"]
    monkeypatch.setattr(sys, "argv", [*args, "--limit", "4", "--results-dir", str(results), *extra])
    with pytest.raises(SystemExit) as done:
        main()
    return done.value.code


@pytest.mark.slow
def test_a_failed_cell_is_recorded_and_a_rerun_fills_only_it(mini_tiny, tmp_path: Path, monkeypatch, capsys) -> None:
    real_run, calls, broken = pipeline.run, [], {("soft", 1)}

    def run(spec: RunSpec):
        calls.append((spec.method, spec.seed))
        if (spec.method, spec.seed) in broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nlong driver trace")
        return real_run(spec)

    monkeypatch.setattr(pipeline, "run", run)
    results = tmp_path / "results"
    assert sweep(monkeypatch, results) == 1
    assert calls == [("hard", 0), ("hard", 1), ("soft", 0), ("soft", 1)]
    records, problems = load_records(results)
    assert sorted((r.method, r.seed) for r in records) == [("hard", 0), ("hard", 1), ("soft", 0)] and not problems
    (failure,) = (results / "failures").glob("*.json")
    saved = json.loads(failure.read_text())
    assert (saved["method"], saved["seed"]) == ("soft", 1) and failure.stem.startswith("tiny-soft-s1-")
    assert saved["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert "1 of 4 cells failed" in capsys.readouterr().err
    assert len(usable_records(results)[0]) == 3 and (results / "leaderboard.md").exists()

    broken.clear()
    calls.clear()
    assert sweep(monkeypatch, results, "--checkpoint-every", "1") == 0  # the checkpoint interval is not a setting
    assert calls == [("soft", 1)]
    assert len(load_records(results)[0]) == 4 and not list((results / "failures").glob("*.json"))
    calls.clear()
    assert sweep(monkeypatch, results) == 0 and calls == []


def test_grid_gives_each_method_its_own_parameters_and_checks_every_cell() -> None:
    template = RunSpec(pair="", method="")
    specs = grid(["tiny"], ["hard", "soft"], [0], {"divergence": "jsd"}, template)
    assert [(s.method, s.method_params) for s in specs] == [("hard", {}), ("soft", {"divergence": "jsd"})]
    assert cell_name(specs[0]) != cell_name(RunSpec(pair="tiny", method="hard", train_overrides={"lr": 0.1}))
    with pytest.raises(HarnessError, match="parameter 'distill_weight' belongs to none of the methods hard, soft"):
        grid(["tiny"], ["hard", "soft"], [0], {"distill_weight": 0.5}, template)
    with pytest.raises(HarnessError, match="unknown method 'hrad'"):
        grid(["tiny"], ["hrad"], [0], {}, template)
    with pytest.raises(HarnessError, match="unknown pair 'tinny'"):
        grid(["tinny"], ["hard"], [0], {}, template)


def test_grid_gives_the_teacher_signal_to_the_methods_that_have_the_choice() -> None:
    template = RunSpec(pair="", method="", teacher_signal="online")
    specs = grid(["tiny"], ["hard", "soft", "gkd"], [0], {}, template)
    assert [(s.method, s.teacher_signal) for s in specs] == [("hard", None), ("soft", "online"), ("gkd", None)]
    with pytest.raises(HarnessError, match="--teacher-signal online: none of the methods hard, gkd has the choice"):
        grid(["tiny"], ["hard", "gkd"], [0], {}, template)
    with pytest.raises(HarnessError, match="unknown teacher signal 'cache'"):
        grid(["tiny"], ["soft"], [0], {}, RunSpec(pair="", method="", teacher_signal="cache"))
