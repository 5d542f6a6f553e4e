"""DistiLLM-2 (Ko et al., ICML 2025, arXiv 2503.07067; official code jongwooko/distillm-2,
`src/distillm_trainer.py` `get_batch_logps` / `kd_loss`, loss type `distillm_v2`).

Two kinds of rows: the teacher's responses (the supervision cache) and the initial student's own responses,
generated once before training (`DataPlan(student_responses=True)`), both with the teacher's distribution at every
position. The loss is contrastive:

- teacher-response rows: (2 - beta) * skew KL, KL(P || a1 P + (1 - a1) Q)            (raises q on teacher tokens)
- student-response rows: beta * skew reverse KL, KL(Q || (1 - a2) P + a2 stopgrad(Q))  (lowers q where P is low)

with beta = 1 (the release's default; its `gradual_beta` ramps beta toward 1.5, not offered here). Adaptive skew
(the release's `distillm_v2`): a = clip(1 - (1 - a0) * g0 / (g + 1e-5), 0.01, a0), with g the row's gap
p_T(y) - q_S(y) (teacher rows) or q_S(y) - p_T(y) (student rows) and g0 the reference gap. Differences from the
release, which measures g per sequence (exp of the mean token log-prob) and takes g0 once from the initial student
over the whole data set: rows here are independent positions with no sequence grouping, so g is the token's gap and
g0 the mean gap over the rows of the same kind in the chunk (no state to checkpoint). adaptive = false uses a0.

Data (trainers/plan.py on the `phases` branch): with `DataPlan(student_responses=True)` every training example
carries `student_completion_ids`, the initial student's greedy completion of its prompt. `batch_examples` turns each
example into two rows of the micro-batch, its teacher completion and its student completion, flagged
`from_student` (trainers.batch collates the flag into `TeacherRows.from_student`). The teacher's distribution on
the student's responses is not in the supervision cache, so the method asks for the online teacher
(`teacher_signal = online` in its data plan, whatever the run asks: the harness refuses an explicit topk), as the
release does (it runs the teacher on both kinds of responses). Training data without student responses is an
error: the method is not DistiLLM-2 without its second data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdcore.errors import HarnessError
from trainers.divergences import log_softmax
from trainers.objectives import Objective, Params, TeacherRows, register_method, select_top_param, teacher_logprobs
from trainers.params import param
from trainers.plan import DataPlan
from trainers.selection import select_rows
from trainers.topk import student_buckets, teacher_buckets

PAPER = "Ko et al. 2025, DistiLLM-2 (jongwooko/distillm-2)"
MIN_SKEW = 0.01  # the release's lower clip of the adaptive skew


@dataclass
class DistiLLM2Params(Params):
    skew_teacher: float = param(
        0.1,
        "a1 (ceiling with adaptive): teacher weight in the skew KL's mixture",
        kind="float",
        low=0.0,
        high=1.0,
        open_high=True,
        source=PAPER,
    )
    skew_student: float = param(
        0.1,
        "a2 (ceiling with adaptive): student weight in the skew reverse KL's mixture",
        kind="float",
        low=0.0,
        high=1.0,
        open_high=True,
        source=PAPER,
    )
    adaptive: bool = param(True, "adaptive skew from the teacher-student gap on the token", kind="bool", source=PAPER)
    beta: float = param(
        1.0,
        "weight of the student-response term; teacher rows get 2 - beta",
        kind="float",
        low=0.0,
        high=2.0,
        source=PAPER,
    )
    select_top: float = select_top_param()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adaptive and min(self.skew_teacher, self.skew_student) < MIN_SKEW:
            raise HarnessError(f"distillm2 adaptive skew needs skew_teacher, skew_student >= {MIN_SKEW}")


def adaptive_skew(gap: Tensor, ceiling: float) -> Tensor:
    """clip(1 - (1 - a0) * mean(gap) / (gap + 1e-5), 0.01, a0) per row (detached); a0 for a single row."""
    with torch.no_grad():
        anchor = (1.0 - ceiling) * gap.mean()
        skew = 1.0 - anchor / (gap + 1e-5)
        return skew.nan_to_num(nan=ceiling).clamp(MIN_SKEW, ceiling)  # nan only at 0 / 0: no gap anywhere


def log_mix(x: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """log(w exp(x) + (1 - w) exp(y)) with per-row weights w [n] in (0, 1)."""
    w = w[:, None]
    return torch.logaddexp(torch.log(w) + x, torch.log1p(-w) + y)


def kl(x: Tensor, y: Tensor) -> Tensor:
    return (x.exp() * (x - y)).sum(-1)


def distillm2_terms(
    student: Tensor,
    teacher: Tensor,
    target_logprobs: tuple[Tensor, Tensor],
    from_student: Tensor,
    params: DistiLLM2Params,
) -> Tensor:
    """Per-row DistiLLM-2 loss from log-probs (full vocabulary or top-k buckets) and the rows' kind."""
    lowest = torch.finfo(student.dtype).min
    student, teacher = student.clamp(min=lowest), teacher.clamp(min=lowest)
    student_target, teacher_target = (x.detach().exp() for x in target_logprobs)
    ones = torch.ones_like(student_target)
    a1, a2 = ones * params.skew_teacher, ones * params.skew_student
    if params.adaptive:
        on_teacher, on_student = ~from_student, from_student
        if on_teacher.any():
            a1[on_teacher] = adaptive_skew((teacher_target - student_target)[on_teacher], params.skew_teacher)
        if on_student.any():
            a2[on_student] = adaptive_skew((student_target - teacher_target)[on_student], params.skew_student)
    forward = kl(teacher, log_mix(teacher, student, a1))
    reverse = kl(student, log_mix(student.detach(), teacher, a2))
    return torch.where(from_student, params.beta * reverse, (2.0 - params.beta) * forward)


@register_method
class DistiLLM2(Objective):
    name = "distillm2"
    description = (
        "DistiLLM-2: (2 - beta) KL(P || a1 P + (1 - a1) Q) on teacher responses + beta KL(Q || (1 - a2) P + "
        "a2 sg(Q)) on the initial student's own responses (generated once, cached); adaptive skews a1, a2"
    )
    Params = DistiLLM2Params
    soft_labels = True

    def data_plan(self, teacher_signal: str | None = None) -> DataPlan:
        return DataPlan(completions="teacher", teacher_signal="online", student_responses=True)

    def batch_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each example as two rows: its teacher completion and the initial student's (`from_student`)."""
        if any("student_completion_ids" not in ex for ex in examples):
            raise HarnessError(
                "distillm2 needs the initial student's responses (student_completion_ids in every training example, "
                "prepared by the run driver from DataPlan(student_responses=True)); this training data has none"
            )
        rows = []
        for ex in examples:
            prompt = ex["prompt_ids"]
            rows.append({"prompt_ids": prompt, "completion_ids": ex["completion_ids"], "from_student": False})
            rows.append({"prompt_ids": prompt, "completion_ids": ex["student_completion_ids"], "from_student": True})
        return rows

    def token_losses(self, logits: Tensor, targets: Tensor, teacher: TeacherRows, progress: float):
        if teacher.from_student is None:
            raise HarnessError("distillm2 rows must be flagged from_student (see DistiLLM2.batch_examples)")
        if teacher.logits is None and teacher.topk_ids is None:
            raise HarnessError(
                "distillm2 needs the teacher's distribution on every row: run it with the online teacher"
            )
        if teacher.logits is not None:
            student, target = log_softmax(logits), log_softmax(teacher.logits)
        else:
            student = student_buckets(logits, teacher.topk_ids)
            target = teacher_buckets(teacher.topk_ids, teacher.topk_logprobs)
        student_target = log_softmax(logits).gather(-1, targets[:, None])[:, 0]
        teacher_target = teacher_logprobs(teacher, targets)[1]
        from_student = teacher.from_student.bool()
        losses = distillm2_terms(student, target, (student_target, teacher_target), from_student, self.params)
        soft = select_rows(logits, losses, self.params.select_top)
        return {"loss": soft, "soft_loss": soft.detach(), "student_rows": from_student.float()}
