"""TAID, DistiLLM-2 and SE-KD selection against their formulas; every new method end to end on the tiny pair."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from kdcore.errors import HarnessError
from trainers.batch import collate
from trainers.distillm2 import adaptive_skew, distillm2_terms
from trainers.loop import TrainConfig, train
from trainers.objectives import TeacherRows, load_method
from trainers.selection import select_rows
from trainers.taid import taid_loss
from trainers.topk import topk_logprobs

torch.set_num_threads(1)


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def mix(w: float, x: list[float], y: list[float]) -> list[float]:
    return [w * a + (1 - w) * b for a, b in zip(x, y, strict=True)]


# --- SE-KD selection ------------------------------------------------------------------------------------------


def test_select_rows_keeps_the_highest_student_entropy_rows_rescaled() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [1.0, 0.0, 0.0], [20.0, 0.0, 0.0]])
    values = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    kept = select_rows(logits, values, 0.5)  # entropies: row 0 > row 2 > row 1 > row 3
    assert kept.tolist() == [2.0, 0.0, 6.0, 0.0]  # two of four rows kept, each x 4/2: mean over the kept rows
    kept.sum().backward()
    assert values.grad.tolist() == [2.0, 0.0, 2.0, 0.0]
    assert select_rows(logits, values, 1.0) is values
    assert select_rows(logits, values, 0.1).nonzero().flatten().tolist() == [0]  # at least one row


def test_select_top_applies_to_the_soft_term_of_soft() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5), torch.randn(6, 5)
    ids, logprobs = topk_logprobs(teacher, 5, dtype=torch.float32)
    rows = TeacherRows(ids, logprobs)
    full = load_method("soft").token_losses(student, torch.zeros(6, dtype=torch.long), rows, 0.0)["loss"]
    picked = load_method("soft", select_top=0.5).token_losses(student, torch.zeros(6, dtype=torch.long), rows, 0.0)
    assert torch.allclose(picked["loss"], select_rows(student, full, 0.5))


# --- TAID ------------------------------------------------------------------------------------------------------


def test_taid_target_interpolates_logits() -> None:
    s, t = torch.tensor([[0.0, 0.0]]), torch.log(torch.tensor([[0.8, 0.2]]))
    assert taid_loss(s, t, 1.0).item() == pytest.approx(kl([0.8, 0.2], [0.5, 0.5]), rel=1e-6)  # t = 1: FKL
    assert taid_loss(s, t, 0.0).item() == pytest.approx(0.0, abs=1e-7)  # t = 0: the student itself
    # t = 1/2: target softmax(0.5 log p) = sqrt(p) renormalised
    target = [math.sqrt(0.8) / (math.sqrt(0.8) + math.sqrt(0.2)), math.sqrt(0.2) / (math.sqrt(0.8) + math.sqrt(0.2))]
    assert taid_loss(s, t, 0.5).item() == pytest.approx(kl(target, [0.5, 0.5]), rel=1e-6)


def test_taid_gradient_is_student_minus_target() -> None:
    torch.manual_seed(1)
    s = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 6, dtype=torch.float64)
    (grad,) = torch.autograd.grad(taid_loss(s, t, 0.3).sum(), s)
    target = torch.softmax(0.7 * s.detach() + 0.3 * t, -1)
    assert torch.allclose(grad, torch.softmax(s.detach(), -1) - target, rtol=1e-12, atol=1e-14)
    teacher = t.clone().requires_grad_(True)  # smooth in the teacher's logits: gradcheck
    assert torch.autograd.gradcheck(lambda z: taid_loss(s.detach(), z, 0.3), (teacher,))


def test_taid_on_cached_top_k_equals_online_when_k_is_the_vocabulary() -> None:
    torch.manual_seed(2)
    student, teacher = torch.randn(4, 7), torch.randn(4, 7)
    ids, logprobs = topk_logprobs(teacher, 7, dtype=torch.float32)
    targets = torch.zeros(4, dtype=torch.long)
    cached = load_method("taid").token_losses(student, targets, TeacherRows(ids, logprobs), 0.0)["loss"]
    online = load_method("taid").token_losses(student, targets, TeacherRows(logits=teacher), 0.0)["loss"]
    assert torch.allclose(cached, online, atol=1e-5)


# --- DistiLLM-2 ------------------------------------------------------------------------------------------------

P, Q = [0.6, 0.3, 0.1], [0.4, 0.1, 0.5]


def rows(from_student: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = len(from_student)
    student = torch.tensor([Q] * n, dtype=torch.float64).log()
    teacher = torch.tensor([P] * n, dtype=torch.float64).log()
    return student, teacher, torch.tensor(from_student)


def test_distillm2_rows_on_hand_values() -> None:
    student, teacher, flags = rows([False, True])
    params = load_method("distillm2", adaptive=False, skew_teacher=0.1, skew_student=0.2, beta=1.2).params
    out = distillm2_terms(student, teacher, None, flags, params)
    assert out[0].item() == pytest.approx((2 - 1.2) * kl(P, mix(0.1, P, Q)), rel=1e-12)  # skew KL on teacher rows
    assert out[1].item() == pytest.approx(1.2 * kl(Q, mix(0.8, P, Q)), rel=1e-12)  # skew RKL on student rows


def test_distillm2_adaptive_skew() -> None:
    # anchor = (1 - 0.1) * mean gap 0.3 = 0.27: 1 - 0.27 / 0.2 < 0 -> clipped to 0.01; 1 - 0.27 / 0.4 > 0.1 -> 0.1
    skew = adaptive_skew(torch.tensor([0.2, 0.4], dtype=torch.float64), 0.1)
    assert skew.tolist() == pytest.approx([0.01, 0.1])
    student, teacher, flags = rows([False, True])
    # one sequence of each kind: its own mean gap, 1 - 0.9 g / (g + 1e-5) ~ 0.1: the ceiling
    sequence = torch.stack([student[:, 0], teacher[:, 0]], dim=-1)
    out = distillm2_terms(student, teacher, sequence, flags, load_method("distillm2", adaptive=True).params)
    fixed = distillm2_terms(student, teacher, None, flags, load_method("distillm2").params)
    assert torch.allclose(out, fixed, rtol=1e-3)


def test_distillm2_gradients() -> None:
    torch.manual_seed(3)
    params = load_method("distillm2", adaptive=False).params
    teacher = torch.log_softmax(torch.randn(4, 6, dtype=torch.float64), -1).requires_grad_(True)
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    flags = torch.tensor([False, True, False, True])

    def value(s, t, kinds=flags):
        return distillm2_terms(torch.log_softmax(s, -1), t, None, kinds, params)

    assert torch.autograd.gradcheck(lambda t: value(logits.detach(), t), (teacher,))
    teacher_rows = torch.tensor([False] * 4)  # teacher rows: the student enters only through the mixture, no stopgrad
    assert torch.autograd.gradcheck(lambda s: value(s, teacher.detach(), teacher_rows), (logits,))
    # student rows: the release detaches the student inside the mixture: d/dz of KL(Q || (1-a) P + a sg(Q))
    s = logits.detach().clone().requires_grad_(True)
    q = torch.log_softmax(s, -1)
    m = torch.log(0.9 * teacher.detach().exp() + 0.1 * q.detach().exp())
    manual = (q.exp() * (q - m)).sum(-1)
    (expected,) = torch.autograd.grad(manual.sum(), s)
    (grad,) = torch.autograd.grad(value(s, teacher.detach(), torch.tensor([True] * 4)).sum(), s)
    assert torch.allclose(grad, expected, rtol=1e-12, atol=1e-14)


def test_distillm2_needs_student_responses_and_the_online_teacher() -> None:
    method = load_method("distillm2")
    plan = method.data_plan("topk")
    assert [s.name for s in plan.sources] == [
        "student_responses"
    ] and plan.needs_teacher_model  # the cache has no teacher signal on student text
    with pytest.raises(HarnessError, match="needs the initial student's responses"):
        method.batch_examples([{"prompt_ids": [5], "completion_ids": [7, 1]}])
    with pytest.raises(HarnessError, match="flagged from_student"):
        method.token_losses(
            torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), TeacherRows(logits=torch.zeros(1, 3)), 0
        )
    with pytest.raises(HarnessError, match="online teacher"):
        method.token_losses(
            torch.zeros(1, 3),
            torch.zeros(1, dtype=torch.long),
            TeacherRows(row_values={"from_student": torch.tensor([True])}),
            0,
        )


def test_distillm2_batches_both_responses_and_collate_flags_them() -> None:
    examples = [
        {"prompt_ids": [5, 6], "completion_ids": [7, 8, 1], "student_completion_ids": [9, 1], "topk_ids": [[1]] * 3},
        {"prompt_ids": [5], "completion_ids": [9, 1], "student_completion_ids": [1]},
    ]
    rows = load_method("distillm2").batch_examples(examples)
    assert [r["completion_ids"] for r in rows] == [[7, 8, 1], [9, 1], [9, 1], [1]]
    batch = collate(rows, pad_id=0, row_fields=load_method("distillm2").row_fields)
    assert batch.row_values["from_student"].tolist() == [False, False, False, True, True, False, False, True]
    assert batch.topk_ids is None  # the online teacher supplies both kinds of rows
    assert collate(examples[1:], pad_id=0).row_values == {}


def test_distillm2_trains_on_both_responses_through_the_loop() -> None:
    from tests.tiny_training import synthetic_examples, tiny_student

    teacher = tiny_student()
    with torch.no_grad():  # a different teacher: perturbed weights
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    data = synthetic_examples(16)
    examples = [dict(ex, student_completion_ids=data[-1 - i]["completion_ids"]) for i, ex in enumerate(data)]
    config = TrainConfig(max_steps=3, batch_size=8, lr=1e-2, seed=0)
    result = train(tiny_student(), load_method("distillm2"), examples, config, pad_id=0, teacher=teacher)
    assert result.steps == 3 and all(math.isfinite(h["loss"]) for h in result.history)
    assert all(0 < h["student_rows"] < 1 for h in result.history)
    with pytest.raises(HarnessError, match="initial student's responses"):
        train(tiny_student(), load_method("distillm2"), synthetic_examples(8), config, pad_id=0, teacher=teacher)


# --- end to end on the tiny pair --------------------------------------------------------------------------------

RUNS = {
    "csd": ["--method", "csd"],
    "distillm": ["--method", "distillm"],
    "distillm2": ["--method", "distillm2"],
    "dld": ["--method", "dld", "--param", 'div_params={"weights": "student", "normalization": "mean"}'],
    "taid": ["--method", "taid"],
    "hybrid-wsl-akl": ["--method", "hybrid", "--param", "weighting=wsl", "--div", "akl"],
    "hybrid-entropy": ["--method", "hybrid", "--param", "weighting=entropy_sft_distill"],
    "hybrid-chi2-curriculum": ["--method", "hybrid", "--param", "weighting=chi2_curriculum", "--div", "jsd"],
    "soft-jsd-skew-sekd": ["--method", "soft", "--div", "jsd-skew", "--param", "select_top=0.2"],
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_new_methods_run_on_the_tiny_pair(mini_tiny, run: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from harness.cli import main

    results = tmp_path / "results"
    args = ["harness", "run", "--pair", "tiny", "--max-steps", "2", "--limit", "2", "--results-dir", str(results)]
    monkeypatch.setattr(sys, "argv", [*args, *RUNS[run]])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    (record_path,) = (results / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["method"] == RUNS[run][1] and record["training"]["steps"] == 2
    online = run in ("distillm2", "dld")  # their data plans: the cache has no signal on student text, no raw logits
    assert record["train_config"]["teacher_signal"] == ("online" if online else "topk")  # what it used
    phases = record["cost"]["phases"]
    assert ("student_responses" in phases) == (run == "distillm2")  # DistiLLM-2's second data set, charged
    if run == "distillm2":
        assert phases["student_responses"]["device_hours"] > 0  # built here or carried from the cache's build
    if run == "hybrid-entropy":  # the release's defaults are in the record
        assert {k: record["method_params"][k] for k in ("distill_weight", "entropy_gamma", "divergence")} == {
            "distill_weight": 0.2,
            "entropy_gamma": 0.1,
            "divergence": "ab",
        }
