"""The CLI: every user error is one line naming the bad value and the choices, exit code 2, no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.cli import main
from kdcore.errors import HarnessError


def invoke(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "--pair", "nope"), "unknown pair 'nope'; valid choices: deepseek, deepseek-coder, gemma"),
        (("run", "--method", "nope"), "unknown method 'nope'; valid choices: "),
        (("run", "--param", "alpha"), "malformed --param 'alpha'; expected key=value"),
        (("run", "--param", "colour=1"), "unknown parameter for method 'hybrid': 'colour'"),
        (("run", "--backend", "tpu"), "unknown backend 'tpu'"),
        (("run", "--pairs-file", "/nonexistent.toml"), "pairs file not found: /nonexistent.toml"),
        (("eval", "--model", "x", "--tasks", "arith,nope"), "unknown task 'nope'"),
        (("eval", "--model", "x", "--tasks", "arith", "--num-fewshot", "2"), "task 'arith' has no few-shot examples"),
        (("analyze", "--pair", "tiny"), "--pair tiny needs --run RECORD"),
    ],
)
def test_user_errors(monkeypatch, capsys, args: tuple[str, ...], message: str) -> None:
    code, output = invoke(monkeypatch, capsys, *args)
    assert code == 2
    assert message in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1


def test_debug_shows_the_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["harness", "--debug", "run", "--pair", "nope"])
    with pytest.raises(HarnessError, match="unknown pair"):
        main()


def test_listing_commands(monkeypatch, capsys) -> None:
    code, output = invoke(monkeypatch, capsys, "pairs")
    assert code == 0 and "Qwen/Qwen2.5-7B-Instruct" in output and "tiny" in output
    code, output = invoke(monkeypatch, capsys, "methods")
    assert code == 0 and all(name in output for name in ("hard", "soft", "hybrid", "sft"))


def test_leaderboard_on_empty_results(monkeypatch, capsys, tmp_path: Path) -> None:
    code, _ = invoke(monkeypatch, capsys, "leaderboard", "--results-dir", str(tmp_path))
    assert code == 0 and (tmp_path / "leaderboard.md").exists()


@pytest.mark.parametrize("command", ["run", "eval", "leaderboard", "pairs", "methods", "compare", "tasks", "analyze"])
def test_help(monkeypatch, capsys, command: str) -> None:
    code, output = invoke(monkeypatch, capsys, command, "--help")
    assert code == 0 and "Usage" in output


@pytest.mark.parametrize("command", ["run", "sweep", "tune"])
def test_the_run_options_are_the_specs_fields_and_the_training_settings(monkeypatch, capsys, command: str) -> None:
    from dataclasses import fields

    from harness.spec import Execution, RunSpec
    from kdcore.train_settings import TRAIN_SETTINGS

    monkeypatch.setenv("COLUMNS", "400")  # one help line per option
    code, output = invoke(monkeypatch, capsys, command, "--help")
    assert code == 0
    lines = output.splitlines()

    def help_of(option: str) -> str:
        (line,) = [line for line in lines if line.lstrip("│ ").startswith(f"{option} ")]
        return " ".join(line.split())

    options = [
        (f"--{f.name.replace('_', '-')}", f.metadata["help"])
        for owner in (RunSpec, Execution)
        for f in fields(owner)
        if "help" in f.metadata
    ]
    assert {name for name, _ in options} >= {"--limit", "--top-k", "--backend", "--results-dir", "--report-to"}
    for name, text in options:
        assert " ".join(text.split()) in help_of(name), name
    for name, setting in TRAIN_SETTINGS.items():
        if name == "seed":  # each command's own option (run --seed, sweep and tune --seeds)
            continue
        shown = [line for line in lines if line.lstrip("│ ").startswith(f"--{name.replace('_', '-')} ")]
        assert bool(shown) == setting.option, name
        if setting.option:
            assert setting.meaning in help_of(f"--{name.replace('_', '-')}"), name
