"""What the listing and evaluation commands show: whole hub ids, a pair's training settings, where `eval` wrote, and
no evaluation overwriting another."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.eval_folder import MARKER, claim, default_folder
from harness.pairs import load_pairs
from kdcore.errors import HarnessError
from tests.test_cli import invoke


def test_pairs_shows_every_hub_id_whole_at_160_columns(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    code, output = invoke(monkeypatch, capsys, "pairs")
    assert code == 0
    for pair in load_pairs().values():
        assert pair.teacher in output and pair.student in output, pair.name


def test_pairs_show_lists_the_training_settings_with_their_source(monkeypatch, capsys) -> None:
    code, output = invoke(monkeypatch, capsys, "pairs", "--show", "qwen")
    assert code == 0
    lines = {line.split("│")[1].strip(): line for line in output.splitlines() if line.count("│") == 4}
    assert "8" in lines["gradient_accumulation_steps"] and "pair (train)" in lines["gradient_accumulation_steps"]
    assert "cosine" in lines["lr_scheduler_type"] and "default" in lines["lr_scheduler_type"]
    assert "True" in lines["bf16"]
    assert "above the table" not in output  # every source says its reason in place


def test_eval_folders_are_one_per_evaluation_and_never_overwritten(tmp_path: Path) -> None:
    first = {"model": "org/Model-1B", "tasks": ["arith"], "settings": {"limit": 5}}
    other = first | {"settings": {"limit": 6}}
    assert default_folder(first) != default_folder(other)
    assert default_folder(first).parent == Path("results/eval") and default_folder(first).name.startswith("Model-1B-")
    claim(tmp_path, first)
    claim(tmp_path, first)  # the same evaluation again: resumes in its own folder
    with pytest.raises(HarnessError, match="holds another evaluation"):
        claim(tmp_path, other)
    (tmp_path / MARKER).unlink()
    (tmp_path / "scores.json").write_text("{}")
    with pytest.raises(HarnessError, match="unknown settings"):
        claim(tmp_path, first)


def test_eval_says_where_it_wrote(monkeypatch, capsys, tmp_path: Path, mini_tiny) -> None:
    from harness.models import resolve

    monkeypatch.chdir(tmp_path)
    model = resolve("builtin:tiny/student")
    code, output = invoke(monkeypatch, capsys, "eval", "--model", model, "--tasks", "arith", "--limit", "3")
    assert code in (0, None)
    written = next(Path("results/eval").glob("student-*/scores.json"))
    assert f"wrote {written}" in " ".join(output.split())
