"""Top-k soft labels: bucket math, exactness at k = vocab, Arrow round trip, gradients and the top-k gap."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from kdcore.errors import HarnessError
from trainers.divergences import DIVERGENCES, token_divergence
from trainers.topk import (
    _tail_logprob,
    bucket_logprobs,
    mean_topk_gap,
    student_buckets,
    teacher_buckets,
    topk_divergence,
    topk_features,
    topk_logprobs,
)

torch.set_num_threads(1)


def test_rows_hold_the_top_ids_and_the_tail_mass() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    ids, logprobs = topk_logprobs(logits, 2, dtype=torch.float32)
    assert ids.dtype == torch.int32 and ids.tolist() == [[0, 1]]
    assert torch.allclose(logprobs.exp(), torch.tensor([[0.5, 0.3, 0.2]]))


CACHEABLE = sorted(name for name, spec in DIVERGENCES.items() if not spec.needs_full_logits)


@pytest.mark.parametrize("name", CACHEABLE)
def test_equals_the_full_divergence_when_k_is_the_vocabulary(name: str) -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4, 10) * 3, torch.randn(3, 4, 10) * 3
    ids, logprobs = topk_logprobs(teacher, 10, dtype=torch.float32)
    assert torch.isneginf(logprobs[..., -1]).all()
    bucketed = topk_divergence(name, student, ids, logprobs)
    assert torch.allclose(bucketed, token_divergence(name, student, teacher), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fkl", {}),
        ("rkl", {}),
        ("jsd", {}),
        ("sfkl", {}),
        ("srkl", {}),
        ("tv", {}),
        ("ab", {"alpha": 0.3, "beta": 0.7}),
    ],
    ids=str,
)
def test_buckets_bound_the_full_divergence_from_below(name: str, params: dict[str, float]) -> None:
    # Data-processing inequality: f-divergences (ab on the alpha + beta = 1 line is one) shrink under bucketing.
    torch.manual_seed(1)
    student, teacher = torch.randn(50, 12, dtype=torch.float64), torch.randn(50, 12, dtype=torch.float64) * 2
    ids, logprobs = topk_logprobs(teacher, 4, dtype=torch.float64)
    bucketed = topk_divergence(name, student, ids, logprobs, **params)
    assert (bucketed <= token_divergence(name, student, teacher, **params) + 1e-12).all()
    assert (bucketed > 0).all()


def test_bucketed_fkl_on_a_hand_case() -> None:
    # Teacher (.5, .3, .15, .05), k = 2 -> buckets (.5, .3 | .2); uniform student -> (.25, .25 | .5).
    teacher = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64).log()
    student = torch.zeros(4, dtype=torch.float64)
    ids, logprobs = topk_logprobs(teacher, 2, dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    assert topk_divergence("fkl", student, ids, logprobs).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", CACHEABLE)
def test_zero_when_student_matches_teacher(name: str) -> None:
    torch.manual_seed(2)
    logits = torch.randn(5, 20, dtype=torch.float64)
    ids, logprobs = topk_logprobs(logits, 6, dtype=torch.float64)
    assert torch.allclose(topk_divergence(name, logits, ids, logprobs), torch.zeros(5, dtype=torch.float64), atol=1e-14)


def test_student_tail_is_exact_when_the_top_k_holds_nearly_all_mass() -> None:
    logits = torch.tensor([[30.0, 0.0, 0.0, 0.0]])
    buckets = student_buckets(logits, torch.tensor([[0]]))
    assert buckets[0, 1].item() == pytest.approx(math.log(3) - 30, rel=1e-6)


def reference_buckets(logits: torch.Tensor, ids: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """The bucket log-probs written with autograd: log_softmax, gathers and a logsumexp over a masked copy."""
    logprobs = torch.log_softmax(logits, -1)
    return torch.cat([logprobs.gather(-1, ids), _tail_logprob(logprobs, ids), logprobs.gather(-1, extra)], -1)


@pytest.mark.parametrize("gap", [0.0, 100.0])  # 100: half the rows' tails lie far below the top and take the exact path
def test_bucket_logprobs_match_autograd_values_and_gradients(gap: float) -> None:
    torch.manual_seed(7)
    ids = torch.stack([torch.randperm(12)[:3] for _ in range(6)])
    logits = torch.randn(6, 12, dtype=torch.float64) * 3
    logits[:3].scatter_add_(-1, ids[:3], torch.full((3, 3), gap, dtype=torch.float64))
    logits.requires_grad_(True)
    extra = torch.stack([ids[0, :1], torch.tensor([11])] * 3).reshape(6, 1)  # a top id in some rows, tail in others
    weights = torch.randn(6, 5, dtype=torch.float64)
    buckets, at_extra = bucket_logprobs(logits, ids, extra)
    expected = reference_buckets(logits, ids, extra)
    assert ((buckets[:, -1] < -50).sum() == 3) == (gap > 0)
    assert torch.allclose(torch.cat([buckets, at_extra], -1), expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad((torch.cat([buckets, at_extra], -1) * weights).sum(), logits)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), logits)
    assert torch.allclose(grad, expected_grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: torch.cat(bucket_logprobs(z, ids, extra), -1), (logits,))


def test_a_tail_far_below_the_top_logit_stays_exact() -> None:
    logits = torch.tensor([[200.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    buckets = student_buckets(logits, torch.tensor([[0], [0]]))
    assert buckets[0, 1].item() == pytest.approx(math.log(3) - 200, rel=1e-6)
    buckets[:, 1].sum().backward()  # d tail / d logits: the tail's own softmax minus the full one
    assert torch.allclose(logits.grad[0], torch.tensor([-1.0, 1 / 3, 1 / 3, 1 / 3]), atol=1e-6)


def test_k_column_rows_get_the_tail_from_the_missing_mass() -> None:
    top = torch.tensor([[0.5, 0.3]]).log()
    assert torch.allclose(teacher_buckets(torch.tensor([[0, 1]]), top).exp(), torch.tensor([[0.5, 0.3, 0.2]]))
    # Rounding can make the top-k sum past 1: the tail is clamped to eps, never -inf or nan.
    over = torch.tensor([[0.7, 0.3001]]).log()
    tail = teacher_buckets(torch.tensor([[0, 1]]), over)[0, -1]
    assert torch.isfinite(tail) and tail.exp().item() < 1e-6


def test_gradient_reaches_the_student_logits_and_matches_finite_differences() -> None:
    torch.manual_seed(3)
    teacher = torch.randn(4, 9, dtype=torch.float64)
    ids, logprobs = topk_logprobs(teacher, 3, dtype=torch.float64)
    student = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    for name in ("fkl", "rkl", "ab"):
        assert torch.autograd.gradcheck(lambda s, n=name: topk_divergence(n, s, ids, logprobs), (student,))
    topk_divergence("fkl", student.float(), ids, logprobs.half()).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_round_trip_through_an_arrow_dataset() -> None:
    torch.manual_seed(4)
    k, lengths = 8, [5, 3]
    rows = [topk_logprobs(torch.randn(n, 50) * 4, k) for n in lengths]
    dataset = Dataset.from_dict(
        {"topk_ids": [r.ids.numpy() for r in rows], "topk_logprobs": [r.logprobs.numpy() for r in rows]},
        features=topk_features(k),
    )
    per_token = sum(lengths) * (6 * k + 2)
    assert per_token <= dataset.data.nbytes <= per_token + 2 * 4 * (len(lengths) + 1)  # + int32 offsets per row
    loaded = dataset.with_format("torch")
    for i, row in enumerate(rows):
        assert torch.equal(loaded[i]["topk_ids"].to(torch.int32), row.ids)
        assert torch.equal(loaded[i]["topk_logprobs"].to(torch.float16), row.logprobs)


def test_float16_storage_changes_the_loss_only_slightly() -> None:
    torch.manual_seed(5)
    student, teacher = torch.randn(64, 100) * 2, torch.randn(64, 100) * 4
    exact = topk_divergence("fkl", student, *topk_logprobs(teacher, 16, dtype=torch.float32))
    stored = topk_divergence("fkl", student, *topk_logprobs(teacher, 16))
    assert torch.allclose(stored, exact, rtol=1e-2, atol=1e-3)


def test_topk_gap_on_a_hand_case() -> None:
    # Top-2 of (0.5, 0.3, 0.15, 0.05) keeps 0.5, 0.3 and rebuilds the tail as 0.1, 0.1.
    teacher = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64).log()
    expected = 0.15 * math.log(0.15 / 0.1) + 0.05 * math.log(0.05 / 0.1)
    assert mean_topk_gap(teacher, 2, dtype=torch.float64) == pytest.approx(expected, rel=1e-12)
    assert mean_topk_gap(teacher, 4, dtype=torch.float64) == pytest.approx(0.0, abs=1e-15)


def test_topk_gap_shrinks_as_k_grows_on_a_peaked_teacher() -> None:
    torch.manual_seed(6)
    teacher = torch.randn(32, 200) * 3
    gaps = [mean_topk_gap(teacher, k) for k in (4, 32, 200)]
    assert gaps[0] > gaps[1] > gaps[2] >= 0
    assert gaps[2] < 1e-3  # float16 rounding only


def test_bad_k_and_column_counts_are_rejected() -> None:
    with pytest.raises(HarnessError, match="top-k size"):
        topk_logprobs(torch.randn(2, 5), 6)
    with pytest.raises(ValueError, match="columns"):
        teacher_buckets(torch.zeros(2, 3, dtype=torch.int32), torch.zeros(2, 5))


def test_cached_csd_is_exact_on_top_k_pairs_and_treats_the_tail_as_one_token() -> None:
    # The cached log-probs are the teacher's logits up to a per-position shift on the top-k ids; csd cancels shifts.
    torch.manual_seed(5)
    z_s, z_t = torch.randn(4, 12, dtype=torch.float64) * 2, torch.randn(4, 12, dtype=torch.float64) * 2
    ids, logprobs = topk_logprobs(z_t, 5, dtype=torch.float64)
    tail = torch.ones_like(z_s, dtype=torch.bool).scatter(-1, ids.long(), False)

    def buckets(z: torch.Tensor) -> torch.Tensor:  # top-k logits, then the log of the tail's summed exp
        return torch.cat([z.gather(-1, ids.long()), z.masked_fill(~tail, -torch.inf).logsumexp(-1, keepdim=True)], -1)

    d = buckets(z_s) - buckets(z_t)  # raw logits here: equal to the cached value only if the shifts cancel
    w = torch.softmax(z_s, -1)
    w = torch.cat([w.gather(-1, ids.long()), (w * tail).sum(-1, keepdim=True)], -1)  # full-vocabulary weights
    pairs = 0.25 * (w[:, :, None] * w[:, None, :] * (d[:, :, None] - d[:, None, :]) ** 2).sum((-1, -2))
    assert torch.allclose(topk_divergence("csd", z_s, ids, logprobs, weights="student"), pairs, rtol=1e-10)


def test_dld_is_refused_on_the_top_k_cache() -> None:
    ids, logprobs = topk_logprobs(torch.randn(2, 6), 3, dtype=torch.float32)
    with pytest.raises(HarnessError, match="raw logits over the whole vocabulary"):
        topk_divergence("dld", torch.randn(2, 6), ids, logprobs)


def test_cached_csd_gradient_reaches_the_student() -> None:
    torch.manual_seed(6)
    z_t = torch.randn(3, 10, dtype=torch.float64)
    ids, logprobs = topk_logprobs(z_t, 4, dtype=torch.float64)
    z_s = torch.randn(3, 10, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(topk_divergence("csd", z_s, ids, logprobs).sum(), z_s)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # gradcheck with respect to the stored teacher log-probs (the weights are the student's: smooth in them)
    stored = logprobs.clone().requires_grad_(True)
    value = lambda lp: topk_divergence("csd", z_s.detach(), ids, lp, weights="student")  # noqa: E731
    assert torch.autograd.gradcheck(value, (stored,))
