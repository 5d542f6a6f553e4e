"""Every method's loss on small hand-computable cases."""

from __future__ import annotations

import math

import pytest
import torch

from kdcore.errors import HarnessError
from trainers.objectives import METHODS, TeacherRows, cross_entropy_rows, load_method
from trainers.topk import topk_logprobs

LOG2 = math.log(2.0)


def full_topk(teacher_logits: torch.Tensor) -> TeacherRows:
    """Top-k soft labels keeping the whole (tiny) vocabulary: exact, so hand values apply."""
    ids, logprobs = topk_logprobs(teacher_logits, teacher_logits.shape[-1], dtype=torch.float32)
    return TeacherRows(ids, logprobs)


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


STUDENT = torch.zeros(1, 2)  # q = (1/2, 1/2)
TEACHER = torch.log(torch.tensor([[0.8, 0.2]]))  # p = (0.8, 0.2)
TARGET = torch.tensor([0])


def losses(name: str, teacher: TeacherRows | None = None, progress: float = 0.0, **params) -> dict[str, torch.Tensor]:
    return load_method(name, **params).token_losses(STUDENT, TARGET, teacher, progress)


def test_sft_and_hard_are_cross_entropy() -> None:
    for name in ("sft", "hard"):
        assert losses(name)["loss"].item() == pytest.approx(LOG2)


@pytest.mark.parametrize("signal", ["topk", "online"])
def test_soft_forward_kl(signal: str) -> None:
    teacher = full_topk(TEACHER) if signal == "topk" else TeacherRows(logits=TEACHER)
    assert losses("soft", teacher)["loss"].item() == pytest.approx(kl([0.8, 0.2], [0.5, 0.5]), abs=1e-6)
    reverse = losses("soft", teacher, divergence="rkl")["loss"].item()
    assert reverse == pytest.approx(kl([0.5, 0.5], [0.8, 0.2]), abs=1e-6)


def test_hybrid_static_mixes_hard_and_soft() -> None:
    out = losses("hybrid", full_topk(TEACHER), alpha=0.25)
    expected = 0.75 * LOG2 + 0.25 * kl([0.8, 0.2], [0.5, 0.5])
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)
    assert out["soft_weight"].item() == pytest.approx(0.25)


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_cross_entropy_rows_equal_torch_cross_entropy(scale: float) -> None:
    torch.manual_seed(1)
    logits, targets = (torch.randn(9, 30) * scale).requires_grad_(True), torch.randint(0, 30, (9,))
    weights = torch.randn(9)
    ours = cross_entropy_rows(logits, targets)
    torch_ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    assert torch.allclose(ours, torch_ce, rtol=1e-6, atol=1e-6)
    (got,) = torch.autograd.grad((ours * weights).sum(), logits)
    (expected,) = torch.autograd.grad((torch_ce * weights).sum(), logits)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_hybrid_gradient_is_the_mix_of_the_two_terms_gradients() -> None:
    """Hybrid computes its two terms from one softmax; value and gradient equal the two computed apart."""
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 9, requires_grad=True), torch.randint(0, 9, (6,))
    teacher = TeacherRows(*topk_logprobs(torch.randn(6, 9) * 2, 3))
    hybrid = load_method("hybrid", alpha=0.3).token_losses(logits, targets, teacher, 0.0)["loss"]
    soft = load_method("soft").token_losses(logits, targets, teacher, 0.0)["loss"]
    apart = 0.7 * torch.nn.functional.cross_entropy(logits, targets, reduction="none") + 0.3 * soft
    assert torch.allclose(hybrid, apart, atol=1e-6)
    (got,) = torch.autograd.grad(hybrid.sum(), logits)
    (expected,) = torch.autograd.grad(apart.sum(), logits)
    assert torch.allclose(got, expected, atol=1e-6)


def test_hybrid_confidence_weight_is_one_minus_teacher_prob_of_token() -> None:
    assert losses("hybrid", full_topk(TEACHER), weighting="confidence")["soft_weight"].item() == pytest.approx(0.2)


def test_hybrid_entropy_weight_is_smoothness() -> None:
    uniform, peaked = torch.zeros(1, 2), torch.tensor([[30.0, -30.0]])
    assert losses("hybrid", full_topk(uniform), weighting="entropy")["soft_weight"].item() == pytest.approx(1.0)
    assert losses("hybrid", full_topk(peaked), weighting="entropy")["soft_weight"].item() == pytest.approx(
        0.0, abs=1e-6
    )
    # p = (0.8, 0.2), gamma = 2: sum p^2 = 0.68, rescaled from [1/2, 1]: 1 - (0.68 - 0.5) / 0.5 = 0.64
    assert losses("hybrid", full_topk(TEACHER), weighting="entropy")["soft_weight"].item() == pytest.approx(0.64)


def test_hybrid_curriculum_ramps_to_alpha() -> None:
    weight = [
        losses("hybrid", full_topk(TEACHER), progress=t, weighting="curriculum", alpha=0.6, warmup=0.5)["soft_weight"]
        for t in (0.0, 0.25, 0.5, 0.9)
    ]
    assert [w.item() for w in weight] == pytest.approx([0.0, 0.3, 0.6, 0.6])


def test_hybrid_risk_weight() -> None:
    # uniform teacher: margin 0, risk 0, all soft; one-hot teacher: risk 1, all hard
    assert losses("hybrid", full_topk(torch.zeros(1, 2)), weighting="risk")["soft_weight"].item() == pytest.approx(1.0)
    peaked = full_topk(torch.tensor([[30.0, -30.0]]))
    assert losses("hybrid", peaked, weighting="risk")["soft_weight"].item() == pytest.approx(0.0, abs=1e-6)


def test_gkd_is_jsd_and_hybrid_gkd_adds_argmax_ce() -> None:
    teacher = TeacherRows(logits=torch.tensor([[30.0, -30.0]]))  # p ~ (1, 0)
    student = torch.tensor([[-30.0, 30.0]])  # q ~ (0, 1): JSD(0.5) = log 2
    gkd = load_method("gkd").token_losses(student, TARGET, teacher, 0.0)["loss"].item()
    assert gkd == pytest.approx(LOG2, abs=1e-5)
    hybrid = load_method("hybrid-gkd", alpha=0.5).token_losses(STUDENT, TARGET, TeacherRows(logits=TEACHER), 0.0)
    jsd = load_method("gkd").token_losses(STUDENT, TARGET, TeacherRows(logits=TEACHER), 0.0)["loss"]
    assert hybrid["loss"].item() == pytest.approx(0.5 * LOG2 + 0.5 * jsd.item(), abs=1e-6)


def test_loss_gradients_reach_student_logits() -> None:
    for name in METHODS:
        logits = STUDENT.clone().requires_grad_(True)
        teacher = TeacherRows(logits=TEACHER) if METHODS[name].on_policy else full_topk(TEACHER)
        load_method(name).token_losses(logits, TARGET, teacher, 0.5)["loss"].sum().backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown method 'nope'"),
        ("hybrid", {"weighting": "magic"}, "unknown weighting 'magic'"),
        ("hybrid", {"alpha": 2.0}, "alpha must be in"),
        ("soft", {"colour": 1}, "unknown parameter"),
    ],
)
def test_bad_method_arguments(name: str, params: dict, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        load_method(name, **params)
