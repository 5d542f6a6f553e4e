"""The study: distillation losses, the tiny student, metrics, intervals, and a tiny end-to-end run."""

import json

import numpy as np
import pytest
import torch

from harness.analysis.process import FiniteStateTeacher
from harness.analysis.students import table_student
from harness.analysis.study import entropy, evaluate_student, interval, run_study
from harness.analysis.tiny_student import (
    STUDY_METHODS,
    GRUStudentConfig,
    TinyGRU,
    model_student,
    study_objective,
    train_student,
)
from kdcore.errors import HarnessError
from trainers.objectives import TeacherRows

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def process() -> FiniteStateTeacher:
    return FiniteStateTeacher()


def test_study_methods_are_the_trainers_objectives_and_handle_an_exact_teacher():
    assert study_objective("hybrid-risk").params.weighting == "margin-entropy"
    hybrid = study_objective("hybrid").params
    assert hybrid.weighting == "sft" and hybrid.distill_weight == 0.5
    assert study_objective("soft").params.divergence == "fkl"
    teacher = torch.tensor([[0.7, 0.3, 0.0], [1.0, 0.0, 0.0]]).log()  # zeros become -inf logits
    logits = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.5, -1.0]], requires_grad=True)
    targets = torch.tensor([1, 0])
    hard = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    for name in STUDY_METHODS:
        loss = study_objective(name).token_losses(logits, targets, TeacherRows(logits=teacher), 0.5)["loss"]
        assert torch.isfinite(loss).all(), name
        torch.testing.assert_close(loss[1], hard[1])  # a one-hot teacher: every method is the cross-entropy
    with pytest.raises(HarnessError, match="unknown study method 'nope'"):
        study_objective("nope")


def test_tiny_gru_is_causal_and_gives_distributions():
    torch.manual_seed(0)
    model = TinyGRU(vocab_size=7, embedding=4, hidden=8).eval()
    student = model_student(model)
    tokens = np.array([[1, 2, 3, 4], [1, 2, 5, 6]])
    probs = student(tokens)
    assert probs.shape == (2, 5, 7)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs[0, :3], probs[1, :3], rtol=1e-6)  # same prefixes, same predictions
    np.testing.assert_allclose(student(tokens[:, :2])[:, -1], probs[:, 2], rtol=1e-5)


def test_training_brings_the_student_closer_to_the_teacher(process):
    untrained = evaluate_student(process, model_student(TinyGRU(len(process.vocab), 16, 32).eval()), 100, seed=0)
    trained = model_student(train_student(process, "soft", seed=0, config=GRUStudentConfig(texts=300, steps=80)))
    assert evaluate_student(process, trained, 100, seed=0).teacher_forced_kl < 0.5 * untrained.teacher_forced_kl


def test_metrics_of_a_student_equal_to_the_teacher(process):
    metrics = evaluate_student(process, table_student(process, process.teacher), rollouts=100, seed=0)
    assert metrics.exposure_bias == 0.0 and metrics.teacher_forced_kl == 0.0
    assert metrics.bridge_accuracy == 1.0
    assert metrics.garden_entropy_ratio == pytest.approx(1.0, abs=1e-12)


def test_entropy_and_interval_known_values():
    assert entropy(np.array([0.5, 0.5, 0.0])) == pytest.approx(np.log(2))
    stat = interval([1.0, 2.0, 3.0])
    assert stat["mean"] == 2.0
    assert stat["high"] - 2.0 == pytest.approx(4.302652729911275 / np.sqrt(3))
    assert np.isnan(interval([1.0])["low"])


def test_tiny_study_writes_its_outputs(tmp_path):
    result = run_study(
        tmp_path,
        methods=("hard", "soft"),
        seeds=(0, 1),
        config=GRUStudentConfig(texts=100, steps=5),
        rollouts=50,
        heatmap_horizon=2,
    )
    assert [(r["method"], r["seed"]) for r in result.runs] == [("hard", 0), ("hard", 1), ("soft", 0), ("soft", 1)]
    assert set(result.summary) == {"hard", "soft"} and not result.comparisons  # no hybrid to compare
    report = json.loads((tmp_path / "study.json").read_text())
    assert report["summary"]["soft"]["exposure_bias"]["low"] <= report["summary"]["soft"]["exposure_bias"]["mean"]
    words = report["example"]["text"].split()
    assert len(report["example"]["risk"]["hard"]) == len(words)
    assert (tmp_path / "kappa_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "kappa_heatmap.html").read_text()
    assert page.count("class='tip'") == len(words) * (2 * 3 + 1) and "&lt;eos&gt;" in page and "<script" not in page
    assert "| hard |" in (tmp_path / "study.md").read_text()
    with pytest.raises(HarnessError, match="unknown study method"):
        run_study(tmp_path, methods=("sft",))
