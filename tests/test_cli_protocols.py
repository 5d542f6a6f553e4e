"""`harness pairs --show`, `harness tasks` and `harness verify` on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import preflight
from harness import verify as verify_module
from kdcore.scores import TaskScore
from tests.test_cli import invoke


def test_pairs_show_prints_settings_with_sources(monkeypatch, capsys) -> None:
    code, output = invoke(monkeypatch, capsys, "pairs", "--show", "deepseek")
    assert code == 0
    for text in ("temperature", "0.6", "top_p", "0.95", "32768", "DeepSeek-R1 card", "supervision", "16384", "83.9"):
        assert text in output, text


@pytest.mark.parametrize("name", ["qwen", "qwen3", "llama", "llama-3b", "gemma", "deepseek-coder", "tiny"])
def test_every_pair_shows_its_settings(monkeypatch, capsys, name: str) -> None:
    code, output = invoke(monkeypatch, capsys, "pairs", "--show", name)
    assert code == 0 and f"{name}: evaluation" in output and f"{name}: supervision" in output


def test_pairs_show_unknown_pair(monkeypatch, capsys) -> None:
    code, output = invoke(monkeypatch, capsys, "pairs", "--show", "nope")
    assert code == 2 and "unknown pair 'nope'" in output and len(output.strip().splitlines()) == 1


def test_tasks_lists_licences_and_training_only_tasks(monkeypatch, capsys) -> None:
    code, output = invoke(monkeypatch, capsys, "tasks")
    assert code == 0 and "codealpaca" in output and "CC BY-NC 4.0 (non-commercial)" in output
    assert "training only: 1669 train docs" in output and "MIT" in output


def test_verify_without_published_scores_is_a_one_line_error(monkeypatch, capsys) -> None:
    code, output = invoke(monkeypatch, capsys, "verify", "--pair", "gemma")
    assert code == 2 and "has no published scores" in output and len(output.strip().splitlines()) == 1


def test_verify_prints_and_writes_the_checks_and_exits_1_on_a_difference(monkeypatch, capsys, tmp_path: Path) -> None:
    """The CLI around `verify_pair`, with fake scores: the teacher as its card, the student 20 points under."""

    def fake(pair, role, tasks, out, **kwargs):
        published = {p.task: p.score for p in pair.published if p.model == role}
        shift = -0.2 if role == "student" else 0.0
        return {t: TaskScore(score=published[t] + shift, n=164, metrics={}) for t in tasks}

    monkeypatch.setattr(verify_module, "evaluate_base_model", fake)
    monkeypatch.setattr(preflight, "check_model", lambda ref, role: None)  # no weights here: the scores are fake too
    code, output = invoke(monkeypatch, capsys, "verify", "--pair", "deepseek-coder", "--out", str(tmp_path))
    assert code == 1 and "DIFFERS" in output and "ok" in output
    written = (tmp_path / "verify.json").read_text()
    assert '"agrees": false' in written and '"agrees": true' in written and '"temperature": 0.0' in written
