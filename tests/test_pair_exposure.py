"""Exposure bias on a real pair: the per-text KL sums against a direct computation, and `harness analyze --exposure`
end to end on the tiny pair."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from harness.analysis.pair_exposure import StudentExposure, exposure_markdown, text_kl
from tests.tiny_training import tiny_student


def _direct_kl(teacher, student, prompt: list[int], text: list[int]) -> float:
    """Sum over the text's tokens of KL(p_T || p_S), from one unbatched forward of each model."""
    ids = torch.tensor([prompt + text])
    with torch.no_grad():
        log_t = torch.log_softmax(teacher(ids).logits[0].float(), -1)
        log_s = torch.log_softmax(student(ids).logits[0].float(), -1)
    rows = slice(len(prompt) - 1, len(prompt) + len(text) - 1)  # the positions that predict the text's tokens
    return float((log_t[rows].exp() * (log_t[rows] - log_s[rows])).sum())


def test_text_kl_is_zero_for_the_teacher_itself_and_matches_a_direct_sum() -> None:
    teacher, student = tiny_student(), tiny_student()
    with torch.no_grad():  # a different student: perturbed weights
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    texts = [[20, 21, 22], [], [23]]
    assert text_kl(teacher, teacher, prompts, texts, pad_id=0) == pytest.approx([0.0, 0.0, 0.0], abs=1e-5)
    found = text_kl(teacher, student, prompts, texts, pad_id=0)
    assert found[1] == 0.0  # an empty text accrues nothing
    for prompt, text, value in zip(prompts, texts, found, strict=True):
        if text:
            assert value == pytest.approx(_direct_kl(teacher, student, prompt, text), rel=1e-4)
            assert value > 0


def test_table_intervals() -> None:
    """Per method the 95% t interval over seeds (4.303 * sd / sqrt(3) at 3 seeds; none for one seed), and the
    paired differences over the seeds two methods share."""
    rows = [
        StudentExposure(f"r{m}{s}", m, s, 1.0, 1.0 + b + s / 10, b + s / 10, 0.1, 30.0)
        for m, b in (("hard", 0.5), ("hybrid", 0.2))
        for s in range(3)
    ]
    rows.append(StudentExposure("rsoft0", "soft", 0, 1.0, 1.7, 0.7, 0.1, 30.0))
    table = exposure_markdown(rows, "hard")
    half = 4.303 * 0.1 / 3**0.5
    assert f"| hybrid | 3 | 1.000 | 1.300 | 0.300 [{0.3 - half:.3f}, {0.3 + half:.3f}] | 30.0 |" in table
    assert "| soft | 1 | 1.000 | 1.700 | 0.700 | 30.0 |" in table
    assert "| hybrid | 3 | -0.300 [-0.300, -0.300] |" in table
    assert "| soft | 1 |" not in table.split("Paired")[1]  # one shared seed: no paired interval


def test_analyze_exposure_on_the_tiny_pair(mini_tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli import main

    results = tmp_path / "results"
    for argv in (
        ["run", "--pair", "tiny", "--method", "hybrid", "--max-steps", "2", "--limit", "2"],
        ["analyze", "--pair", "tiny", "--exposure", "--limit", "6", "--out", str(tmp_path / "analysis")],
    ):
        monkeypatch.setattr(sys, "argv", ["harness", *argv, "--results-dir", str(results)])
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 0
    (item,) = json.loads((tmp_path / "analysis" / "exposure-tiny.json").read_text())
    assert item["method"] == "hybrid" and item["seed"] == 0
    assert item["bias"] == pytest.approx(item["own_text_kl"] - item["teacher_forced_kl"], abs=1e-9)
    assert item["teacher_forced_kl"] > 0 and item["own_text_tokens"] > 0
    assert "| hybrid | 1 |" in (tmp_path / "analysis" / "exposure-tiny.md").read_text()


def test_analyze_exposure_needs_kept_students(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli import main

    monkeypatch.setattr(
        sys, "argv", ["harness", "analyze", "--pair", "tiny", "--exposure", "--results-dir", str(tmp_path)]
    )
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
