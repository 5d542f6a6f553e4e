"""The training loop's bookkeeping: which steps log the entropy diagnostics, and how examples are read."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_training import synthetic_examples, tiny_student
from trainers.loop import TrainConfig, train
from trainers.objectives import load_method


def test_entropy_diagnostics_are_logged_every_n_steps_and_at_the_last() -> None:
    config = TrainConfig(max_steps=6, batch_size=4, lr=1e-2, diagnostics_every=4)
    student, trained = tiny_student(), tiny_student()
    result = train(trained, load_method("hard"), synthetic_examples(), config, pad_id=0)
    assert [step for step, row in enumerate(result.history) if "student_entropy" in row] == [0, 4, 5]
    assert all("loss" in row for row in result.history)
    # how often the diagnostics are computed changes nothing else (and is not part of the run's settings); the
    # logged loss means may differ in the last digits (a sum over a strided column of the stacked terms)
    every = train(
        student,
        load_method("hard"),
        synthetic_examples(),
        TrainConfig(**{**config.to_dict(), "diagnostics_every": 1}),
        pad_id=0,
    )
    assert [row["loss"] for row in every.history] == pytest.approx([row["loss"] for row in result.history], rel=1e-6)
    for name, weight in student.state_dict().items():
        assert torch.equal(weight, trained.state_dict()[name]), name
    assert all(torch.isfinite(torch.tensor(row["student_entropy"])) for row in every.history)
    assert "diagnostics_every" not in config.to_dict()
