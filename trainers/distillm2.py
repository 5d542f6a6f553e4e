"""DistiLLM-2 (Ko et al., ICML 2025, arXiv 2503.07067) as its release runs it (jongwooko/distillm-2,
`src/distillm_trainer.py` `get_batch_logps` / `kd_loss`, loss type `distillm_v2`; commits and places in
trainers.releases).

Two kinds of rows: the teacher's responses (the supervision cache) and the initial student's own responses,
sampled once before training as the release's `generate/generate_vllm.py` samples them (temperature 0.8, top-p
0.95, seed 42: the `ModelResponses` source of its data plan), both with the teacher's distribution at every
position. The loss is contrastive, per pair of responses to one prompt:

- teacher response: (2 - beta) * mean over its tokens of KL(P || a1 P + (1 - a1) Q)        (raises q on its tokens)
- student response: beta * mean over its tokens of KL(Q || (1 - a2) P + a2 stopgrad(Q))   (lowers q where P is low)

summed over the pair and averaged over the batch's pairs (the release's `average_log_prob=True` and
`losses.mean()`; `reduction = "sequence"` with each sequence's term doubled, as the pair is the sum of its two).
beta = 1 and the skews a1 = a2 = 0.1 are fixed, as in the release, whose adaptive skew is never reached
(`update_alpha = False`). With adaptive = true, the skew is the release's per-sequence formula:
a = clip(1 - (1 - a0) * g0 / (g + 1e-5), 0.01, a0), g = exp(mean log p_T(y)) - exp(mean log q_S(y)) over the
sequence (teacher responses; reversed on student responses), g0 the mean of g over the chunk's rows of the same
kind (the release would take a reference once), the skew held fixed (no gradient).

The teacher's distribution on the student's responses is not in the supervision cache, so the method asks for the
online teacher (`teacher_signal = online` in its data plan, whatever the run asks: the harness refuses an explicit
topk), as the release does. Training data without student responses is an error: the method is not DistiLLM-2
without its second data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdcore.errors import HarnessError
from trainers.divergences import log_softmax
from trainers.objectives import Objective, Params, TeacherRows, register_method, select_top_param
from trainers.params import param
from trainers.plan import DataPlan, ModelResponses, ResponseSampling
from trainers.releases import source
from trainers.selection import select_rows
from trainers.topk import student_buckets, teacher_buckets

MIN_SKEW = 0.01  # the release's lower clip of the adaptive skew
STUDENT_FIELD = "student_completion_ids"  # the example field its data source fills: the initial student's response


@dataclass
class DistiLLM2Params(Params):
    skew_teacher: float = param(
        0.1,
        "a1 (ceiling with adaptive): teacher weight in the skew KL's mixture",
        kind="float",
        low=0.0,
        high=1.0,
        open_high=True,
        source=source("distillm2", "skew_teacher"),
    )
    skew_student: float = param(
        0.1,
        "a2 (ceiling with adaptive): student weight in the skew reverse KL's mixture",
        kind="float",
        low=0.0,
        high=1.0,
        open_high=True,
        source=source("distillm2", "skew_student"),
    )
    adaptive: bool = param(
        False,
        "adaptive skews from each sequence's teacher-student gap",
        kind="bool",
        source=source("distillm2", "adaptive"),
    )
    beta: float = param(
        1.0,
        "weight of the student-response term; teacher rows get 2 - beta",
        kind="float",
        low=0.0,
        high=2.0,
        source=source("distillm2", "beta"),
    )
    student_temperature: float = param(
        0.8,
        "sampling temperature of the initial student's responses (0 = greedy)",
        kind="float",
        low=0.0,
        source=source("distillm2", "student_temperature"),
    )
    student_top_p: float = param(
        0.95,
        "nucleus top-p of the initial student's responses",
        kind="float",
        low=0.0,
        high=1.0,
        open_low=True,
        source=source("distillm2", "student_top_p"),
    )
    student_seed: int = param(
        42, "sampling seed of the initial student's responses", kind="int", source=source("distillm2", "student_seed")
    )
    select_top: float = select_top_param()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adaptive and min(self.skew_teacher, self.skew_student) < MIN_SKEW:
            raise HarnessError(f"distillm2 adaptive skew needs skew_teacher, skew_student >= {MIN_SKEW}")


def adaptive_skew(gap: Tensor, ceiling: float) -> Tensor:
    """clip(1 - (1 - a0) * mean(gap) / (gap + 1e-5), 0.01, a0) per row (detached): `gap` [n] is each row's
    sequence gap, its mean the reference; a0 where the reference and the gap are both 0."""
    with torch.no_grad():
        anchor = (1.0 - ceiling) * gap.mean()
        skew = 1.0 - anchor / (gap + 1e-5)
        return skew.nan_to_num(nan=ceiling).clamp(MIN_SKEW, ceiling)


def log_mix(x: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """log(w exp(x) + (1 - w) exp(y)) with per-row weights w [n] in (0, 1)."""
    w = w[:, None]
    return torch.logaddexp(torch.log(w) + x, torch.log1p(-w) + y)


def kl(x: Tensor, y: Tensor) -> Tensor:
    return (x.exp() * (x - y)).sum(-1)


def distillm2_terms(
    student: Tensor,
    teacher: Tensor,
    sequence_logprobs: Tensor | None,
    from_student: Tensor,
    params: DistiLLM2Params,
) -> Tensor:
    """Per-row DistiLLM-2 loss from log-probs (full vocabulary or top-k buckets) and the rows' kind; with adaptive
    skews, `sequence_logprobs` [n, 2] holds the mean target log-prob of each row's sequence (student, teacher)."""
    lowest = torch.finfo(student.dtype).min
    student, teacher = student.clamp(min=lowest), teacher.clamp(min=lowest)
    ones = torch.ones_like(from_student, dtype=student.dtype)
    a1, a2 = ones * params.skew_teacher, ones * params.skew_student
    if params.adaptive:
        if sequence_logprobs is None:
            raise HarnessError("distillm2 adaptive skews need each row's sequence log-probs (sequence_logprobs)")
        own, teacher_own = sequence_logprobs.detach().exp().unbind(-1)
        on_teacher, on_student = ~from_student, from_student
        if on_teacher.any():
            a1[on_teacher] = adaptive_skew((teacher_own - own)[on_teacher], params.skew_teacher)
        if on_student.any():
            a2[on_student] = adaptive_skew((own - teacher_own)[on_student], params.skew_student)
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
    row_fields = ("from_student",)
    reduction = "sequence"

    @property
    def sequence_logprobs(self) -> bool:
        return self.params.adaptive

    def data_plan(self, teacher_signal: str | None = None) -> DataPlan:
        p = self.params
        sampling = ResponseSampling(temperature=p.student_temperature, top_p=p.student_top_p, seed=p.student_seed)
        responses = ModelResponses(model="student", example_field=STUDENT_FIELD, sampling=sampling)
        return DataPlan(completions="teacher", teacher_signal="online", sources=(responses,))

    def batch_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each example as two rows: its teacher completion and the initial student's (`from_student`)."""
        if any(STUDENT_FIELD not in ex for ex in examples):
            raise HarnessError(
                f"distillm2 needs the initial student's responses ({STUDENT_FIELD} in every training example, "
                "prepared by the run driver from its data plan's source); this training data has none"
            )
        rows = []
        for ex in examples:
            prompt = ex["prompt_ids"]
            rows.append({"prompt_ids": prompt, "completion_ids": ex["completion_ids"], "from_student": False})
            rows.append({"prompt_ids": prompt, "completion_ids": ex[STUDENT_FIELD], "from_student": True})
        return rows

    def token_losses(self, logits: Tensor, targets: Tensor, teacher: TeacherRows, progress: float):
        if "from_student" not in teacher.row_values:
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
        from_student = teacher.row_values["from_student"].bool()
        losses = distillm2_terms(student, target, teacher.sequence_logprobs, from_student, self.params)
        # x 2: the release's loss is the pair's sum, the sequence reduction averages the pair's two sequences
        soft = select_rows(logits, 2.0 * losses, self.params.select_top)
        return {"loss": soft, "soft_loss": soft.detach(), "student_rows": from_student.float()}
