"""`harness sweep`: the grid runs to the end past a failed cell, and a re-run fills only what is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness import pipeline
from harness.cli import main
from harness.leaderboard import usable_records
from harness.pipeline import RunSpec
from harness.records import load_records
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
    with pytest.raises(HarnessError, match="parameter 'alpha' belongs to none of the methods hard, soft"):
        grid(["tiny"], ["hard", "soft"], [0], {"alpha": 0.5}, template)
    with pytest.raises(HarnessError, match="unknown method 'hrad'"):
        grid(["tiny"], ["hrad"], [0], {}, template)
    with pytest.raises(HarnessError, match="unknown pair 'tinny'"):
        grid(["tinny"], ["hard"], [0], {}, template)


def test_grid_applies_a_preset_to_the_methods_it_sets_and_explicit_params_win() -> None:
    template = RunSpec(pair="", method="")
    hard, hybrid = grid(["tiny"], ["hard", "hybrid"], [0], {"alpha": 0.5}, template, "bridge-garden")
    assert hard.method_params == {} and hybrid.method_params == {"alpha": 0.5, "gamma": 0.1, "warmup": 0.2}
    (plain,) = grid(["tiny"], ["hybrid"], [0], {"alpha": 0.5}, template)
    assert cell_name(hybrid) != cell_name(plain)  # the preset's values are part of the cell
    (hard_alone,) = grid(["tiny"], ["hard"], [0], {}, template)
    assert cell_name(hard) == cell_name(hard_alone)  # a method the preset does not set is the same cell
    with pytest.raises(HarnessError, match="unknown preset 'paper'; valid choices: bridge-garden"):
        grid(["tiny"], ["hybrid"], [0], {}, template, "paper")
    with pytest.raises(HarnessError, match="'bridge-garden' has no values for any of the methods 'hard', 'soft'"):
        grid(["tiny"], ["hard", "soft"], [0], {}, template, "bridge-garden")


@pytest.mark.parametrize(
    ("preset", "methods", "message"),
    [
        ("paper", "hybrid", "unknown preset 'paper'; valid choices: bridge-garden"),
        ("bridge-garden", "hard,soft", "preset 'bridge-garden' has no values for any of the methods 'hard', 'soft'"),
    ],
)
def test_a_bad_sweep_preset_fails_in_one_line_before_anything_loads(
    monkeypatch, capsys, tmp_path: Path, preset: str, methods: str, message: str
) -> None:
    monkeypatch.setattr(pipeline, "run", lambda spec: pytest.fail("a cell ran"))
    assert sweep(monkeypatch, tmp_path, "--preset", preset, methods=methods) == 2
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert message in out and len(out.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_a_sweep_with_a_preset_records_its_values_and_resumes_as_its_own_cells(
    mini_tiny, tmp_path: Path, monkeypatch
) -> None:
    real_run, calls = pipeline.run, []
    monkeypatch.setattr(pipeline, "run", lambda spec: calls.append(spec.method) or real_run(spec))
    results = tmp_path / "results"

    def swept(*extra: str) -> list[str]:
        calls.clear()
        args = ["harness", "sweep", "--methods", "hard,hybrid", "--max-steps", "2", "--limit", "2"]
        monkeypatch.setattr(sys, "argv", [*args, "--results-dir", str(results), *extra])
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 0
        return list(calls)

    assert swept("--preset", "bridge-garden", "--param", "alpha=0.3") == ["hard", "hybrid"]
    records = {r.method: r for r in load_records(results)[0]}
    assert {k: records["hybrid"].method_params[k] for k in ("alpha", "gamma", "warmup")} == {
        "alpha": 0.3,  # the explicit --param wins over the preset's 0.2
        "gamma": 0.1,
        "warmup": 0.2,
    }
    assert records["hybrid"].training["steps"] == 2
    assert swept("--preset", "bridge-garden", "--param", "alpha=0.3") == []  # both cells have their record
    assert swept("--param", "alpha=0.3") == ["hybrid"]  # without the preset, hybrid is another cell; hard is not


def test_grid_gives_the_teacher_signal_to_the_methods_that_have_the_choice() -> None:
    template = RunSpec(pair="", method="", teacher_signal="online")
    specs = grid(["tiny"], ["hard", "soft", "gkd"], [0], {}, template)
    assert [(s.method, s.teacher_signal) for s in specs] == [("hard", None), ("soft", "online"), ("gkd", None)]
    with pytest.raises(HarnessError, match="--teacher-signal online: none of the methods hard, gkd has the choice"):
        grid(["tiny"], ["hard", "gkd"], [0], {}, template)
    with pytest.raises(HarnessError, match="unknown teacher signal 'cache'"):
        grid(["tiny"], ["soft"], [0], {}, RunSpec(pair="", method="", teacher_signal="cache"))
