"""Soft labels stored as the teacher's top-k, with the remaining mass kept in an explicit tail bucket.

Storage. For each position, `topk_logprobs` keeps the ids of the teacher's k most likely tokens (int32) and k + 1
log-probs (float16): the k top tokens, then the log of the tail mass (everything else), computed in float32 from
the full distribution before rounding. float16 rather than bfloat16: log-probs live in [-65504, 0] (float16 also
keeps -inf), and its 10-bit mantissa is 8x finer than bfloat16's, i.e. about 0.1% instead of 0.8% relative error on
a probability whose log-prob is near -3. In a `datasets` Arrow table (`topk_features`) each column is a list (one
per completion) of fixed-size lists (one per token), so a token costs exactly 4k + 2(k + 1) = 6k + 2 bytes (194 at
k = 32, 386 at k = 64) and each completion 8 bytes of list offsets. (`Array2D` with a variable first dimension
would add a 4-byte offset per token and column.) Formatted as torch, `datasets` returns them as int64 / float32.

Loss. `topk_divergence` compares teacher and student on the same k + 1 buckets: the teacher's top-k ids and one tail
bucket. The teacher's buckets are renormalised in float32 (rounding to float16 leaves them summing to 1 only to
~1e-3). The student's tail is the sum of its probabilities outside the k ids, summed over those entries (not
1 - sum q_topk, whose absolute error of ~1e-7 becomes a large relative error in a small student tail, which is exactly
when a teacher tail matters), and rows whose tail lies so far below the top logit that the sum underflows are
recomputed around the tail's own maximum: exact even when the student puts almost all its mass on the k ids.
`bucket_logprobs` computes the buckets (and, for hybrid's cross-entropy, the target's log-prob) from one softmax
with a hand-written backward, so a step holds two [positions, vocab] temporaries where autograd would hold about ten.
Teacher log-probs with only k columns (e.g. from vLLM, which returns the top-k only) get the tail
log(1 - sum exp(topk)), clamped to at least the float32 epsilon, where that difference is below rounding.

Why buckets. Merging the tail tokens into one bucket is a deterministic map applied to both distributions, so by the
data-processing inequality the bucketed divergence (for any f-divergence: fkl, rkl, jsd, sfkl, srkl, tv, and ab on
the alpha+beta=1 line) is a lower bound on the full-vocabulary one, and it is exact when the teacher's tail is empty
(k = vocabulary size: the test checks this). For KL the gap is explicit: KL(P||Q) = KL(P_buckets||Q_buckets) +
P(tail) * KL(P(.|tail) || Q(.|tail)), so the loss ignores only how the student spreads mass inside the tail.
Renormalising the top-k instead (dropping the tail) would let the student put any mass on tokens the teacher ranks
outside its top k at no cost.

`mean_topk_gap` reports how much of the teacher is lost by storing it this way: the mean KL(P || P_hat), P_hat the
distribution the stored row can rebuild (top-k probabilities as stored, tail mass spread evenly over the other
tokens, the maximum-entropy completion).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from datasets import Features, List, Value
from torch import Tensor

from kdcore.errors import HarnessError
from trainers.divergences import DIVERGENCES, divergence_from_logprobs, log_softmax, logit_divergence, scaled_logits


class TopK(NamedTuple):
    """The teacher's top-k per position: ids [..., k] int32, log-probs [..., k + 1] (the last is the tail bucket)."""

    ids: Tensor
    logprobs: Tensor


def _tail_logprob(logprobs: Tensor, ids: Tensor) -> Tensor:
    """log of the mass outside `ids`, i.e. logsumexp over the other entries, shape [..., 1]; -inf if there are none."""
    return logprobs.scatter(-1, ids, -torch.inf).logsumexp(-1, keepdim=True)


def topk_logprobs(
    teacher_logits: Tensor, k: int, *, temperature: float = 1.0, dtype: torch.dtype = torch.float16
) -> TopK:
    """The teacher's k most likely ids (int32) and their log-probs plus the tail's log-mass (`dtype`, k + 1 columns)."""
    vocab = teacher_logits.shape[-1]
    if not 1 <= k <= vocab:
        raise HarnessError(f"top-k size must be between 1 and the vocabulary size {vocab}, got {k}")
    if not temperature > 0:
        raise HarnessError(f"temperature must be > 0, got {temperature}")
    logprobs = log_softmax(teacher_logits, temperature)
    top, ids = logprobs.topk(k, dim=-1)
    buckets = torch.cat([top, _tail_logprob(logprobs, ids)], dim=-1)
    return TopK(ids.to(torch.int32), buckets.to(dtype))


def teacher_buckets(topk_ids: Tensor, topk_logprobs: Tensor) -> Tensor:
    """The teacher's k + 1 bucket log-probs in float32 (float64 stays), renormalised.

    `topk_logprobs` has k + 1 columns (tail last, as `topk_logprobs` stores them) or k columns (the tail is then
    log(1 - sum exp(topk)), at least log(eps)).
    """
    k = topk_ids.shape[-1]
    dtype = torch.float64 if topk_logprobs.dtype == torch.float64 else torch.float32
    logprobs = topk_logprobs.to(dtype)
    if logprobs.shape[-1] == k:
        top_mass = logprobs.logsumexp(-1, keepdim=True)
        tail = torch.log((-torch.expm1(top_mass)).clamp(min=torch.finfo(dtype).eps))
        logprobs = torch.cat([logprobs, tail], dim=-1)
    elif logprobs.shape[-1] != k + 1:
        raise ValueError(f"top-k log-probs need {k} or {k + 1} columns for {k} ids, got {logprobs.shape[-1]}")
    return logprobs - logprobs.logsumexp(-1, keepdim=True)


EXACT_TAIL_BELOW = -50.0  # student tail log-masses below this are recomputed around the tail's own maximum


class _BucketLogprobs(torch.autograd.Function):
    """log softmax(logits) at `ids`, the log-mass outside `ids`, then log softmax(logits) at `extra` ids.

    The same values as gathering from `log_softmax` and a logsumexp over a copy with `ids` set to -inf, with a
    hand-written backward: one [..., V] exp and one masked sum forward, one [..., V] product backward, where autograd
    through log_softmax, the copy and logsumexp keeps about ten [..., V] temporaries. The exp is taken around the row's
    maximum logit, so a tail far below it (log-mass under `EXACT_TAIL_BELOW`) can lose precision: `bucket_logprobs`
    recomputes those rows the exact way. `ids` must be distinct within a row (top-k ids are).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, ids: Tensor, extra: Tensor) -> Tensor:
        top = logits.amax(-1, keepdim=True)
        exp = (logits - top).exp_()
        total = exp.sum(-1, keepdim=True)
        if ids.shape[-1]:
            exp_ids = exp.gather(-1, ids)
            tail = exp.scatter_(-1, ids, 0.0).sum(-1, keepdim=True)
            exp.scatter_(-1, ids, exp_ids)
        else:  # no buckets (a plain cross-entropy): the tail is everything
            tail = total
        log_total = top + total.log()
        out = torch.cat(
            [logits.gather(-1, ids) - log_total, tail.log() - total.log(), logits.gather(-1, extra) - log_total], -1
        )
        ctx.save_for_backward(exp, total, tail, ids, extra)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        exp, total, tail, ids, extra = ctx.saved_tensors
        k = ids.shape[-1]
        grad_ids, grad_tail, grad_extra = grad[..., :k], grad[..., k : k + 1], grad[..., k + 1 :]
        grad_sum = grad.sum(-1, keepdim=True)
        # d out_b / d logits_j = [j in bucket b] * q_j / Q_b - q_j (Q_b: the bucket's mass); for a tail j: exp_j *
        # (grad_tail / tail - grad_sum / total), for a top id: grad_b - q_j * grad_sum (set, then the one-hot added)
        tiny = torch.finfo(exp.dtype).tiny
        out = exp * (grad_tail / tail.clamp(min=tiny) - grad_sum / total)
        out.scatter_(-1, ids, exp.gather(-1, ids) * (-grad_sum / total))
        out.scatter_add_(-1, ids, grad_ids)
        out.scatter_add_(-1, extra, grad_extra)
        return out, None, None


def bucket_logprobs(logits: Tensor, ids: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The student's k + 1 bucket log-probs (log softmax at `ids`, then the exact log-mass outside them) and its
    log-probs at `extra` ids ([..., m], e.g. the targets of a cross-entropy), from one softmax of `logits`."""
    ids = ids.long()
    extra = ids[..., :0] if extra is None else extra.long()
    out = _BucketLogprobs.apply(logits, ids, extra)
    low = out[..., ids.shape[-1]] < EXACT_TAIL_BELOW
    if low.any():  # rare: tails so far below the top logit that exp() around it underflows
        logprobs = logits[low].log_softmax(-1)
        rows = [logprobs.gather(-1, ids[low]), _tail_logprob(logprobs, ids[low]), logprobs.gather(-1, extra[low])]
        out = out.index_put((low,), torch.cat(rows, -1))
    k = ids.shape[-1]
    return out[..., : k + 1], out[..., k + 1 :]


def student_buckets(student_logits: Tensor, topk_ids: Tensor, *, temperature: float = 1.0) -> Tensor:
    """The student's log-probs on the teacher's k ids plus its exact tail log-mass: [..., k + 1], float32."""
    return bucket_logprobs(scaled_logits(student_logits, temperature), topk_ids)[0]


def refuse_topk(divergence: str) -> None:
    """A one-line HarnessError for a divergence the top-k cache cannot serve faithfully."""
    if divergence in DIVERGENCES and DIVERGENCES[divergence].needs_full_logits:
        raise HarnessError(
            f"divergence {divergence!r} is defined on the teacher's raw logits over the whole vocabulary; the top-k "
            "cache stores top-k log-probs only: train it with the online teacher (--teacher-signal online)"
        )


def topk_divergence(
    name: str,
    student_logits: Tensor,
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    *,
    temperature: float = 1.0,
    **params: float,
) -> Tensor:
    """The divergence `name` between teacher and student over the k + 1 buckets, at every position.

    `temperature` applies to the student's logits; the stored teacher log-probs already carry the temperature the
    cache was built with, and the two should match. A logit divergence (csd) gets the k + 1 bucket log-probs at
    temperature 1 as logits (see trainers.divergences) and applies `temperature` to its weights only; one defined on
    the raw logits of the whole vocabulary (dld) is refused.
    """
    if not temperature > 0:
        raise HarnessError(f"temperature must be > 0, got {temperature}")
    refuse_topk(name)
    if name in DIVERGENCES and DIVERGENCES[name].on_logits:
        student = student_buckets(student_logits, topk_ids)
        teacher = teacher_buckets(topk_ids, topk_logprobs)
        return logit_divergence(name, student, teacher, temperature=temperature, **params)
    student = student_buckets(student_logits, topk_ids, temperature=temperature)
    return divergence_from_logprobs(name, student, teacher_buckets(topk_ids, topk_logprobs), **params)


def topk_features(k: int) -> Features:
    """The `datasets` columns for one completion's soft labels: [tokens, k] int32 ids, [tokens, k + 1] float16."""
    return Features(
        {
            "topk_ids": List(List(Value("int32"), length=k)),
            "topk_logprobs": List(List(Value("float16"), length=k + 1)),
        }
    )


def mean_topk_gap(
    teacher_logits: Tensor, k: int, *, temperature: float = 1.0, dtype: torch.dtype = torch.float16
) -> float:
    """Mean over positions of KL(P || P_hat): P the full teacher, P_hat rebuilt from its stored top-k row.

    P_hat has the stored (rounded, renormalised) probabilities on the k ids and the tail mass spread evenly over the
    other vocab - k tokens, so the value counts both the rounding and the detail lost inside the tail.
    """
    full = log_softmax(teacher_logits, temperature)
    stored = topk_logprobs(teacher_logits, k, temperature=temperature, dtype=dtype)
    buckets = teacher_buckets(stored.ids, stored.logprobs).to(full.dtype)
    spare = full.shape[-1] - k
    tail_each = buckets[..., -1:] - torch.log(torch.tensor(max(spare, 1), dtype=full.dtype))
    rebuilt = tail_each.expand_as(full).scatter(-1, stored.ids.long(), buckets[..., :-1])
    return divergence_from_logprobs("fkl", rebuilt, full).mean().item()
