"""`harness run --config run.toml`: every field of a run in one file, the command line's options winning, and a
one-line error for a file that cannot state a run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import pipeline
from harness.cli import main
from harness.spec import RunSpec

CONFIG = """
pair = "tiny"
method = "soft"
seed = 3
limit = 8
top_k = 16
backend = "transformers"

[method_params]
divergence = "rkl"

[train]
max_steps = 50
lr = 1e-3
"""


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as done:
        main()
    return int(done.value.code or 0)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[RunSpec]:
    """The specs `harness run` hands the pipeline (which then does nothing)."""
    specs: list[RunSpec] = []
    monkeypatch.setattr(pipeline, "run", lambda spec: specs.append(spec))
    return specs


def test_the_file_states_the_run_and_options_given_win(tmp_path: Path, monkeypatch, captured) -> None:
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    assert cli(monkeypatch, "run", "--config", str(config)) == 0
    args = (
        "run",
        "--config",
        str(config),
        "--seed",
        "4",
        "--top-k",
        "8",
        "--max-steps",
        "60",
        "--param",
        "temperature=2.0",
    )
    assert cli(monkeypatch, *args) == 0
    from_file, overridden = captured
    assert (from_file.pair, from_file.method, from_file.seed, from_file.limit) == ("tiny", "soft", 3, 8)
    assert (from_file.top_k, from_file.execution.backend) == (16, "transformers")
    assert from_file.method_params == {"divergence": "rkl"}
    assert from_file.train_overrides == {"max_steps": 50, "lr": 1e-3}  # lr set: the tuned one is not applied
    assert from_file.tuning is None
    assert (overridden.seed, overridden.top_k, overridden.limit) == (4, 8, 8)
    assert overridden.execution.backend == "transformers"
    assert overridden.method_params == {"divergence": "rkl", "temperature": 2.0}
    assert overridden.train_overrides == {"max_steps": 60, "lr": 1e-3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('pair = "tiny"\nsed = 1\n', "unknown --config"),
        ('seed = "one"\n', "seed = 'one' must be int"),
        ("seed = true\n", "seed = True must be int"),
        ("limit = 0\n", "--limit"),
        ("method_params = 3\n", "[method_params] must be a table"),
        ("[train]\nlr = -1.0\n", "[train] lr"),
        ('pair = "tiny\n', "not valid TOML"),
    ],
)
def test_a_config_that_cannot_state_a_run_is_one_line(tmp_path, monkeypatch, capsys, captured, text, message) -> None:
    config = tmp_path / "run.toml"
    config.write_text(text)
    assert cli(monkeypatch, "run", "--config", str(config)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not captured


def test_a_missing_config_is_one_line(tmp_path, monkeypatch, capsys, captured) -> None:
    assert cli(monkeypatch, "run", "--config", str(tmp_path / "none.toml")) == 2
    err = capsys.readouterr().err.strip()
    assert "none.toml" in err and len(err.splitlines()) == 1 and not captured
