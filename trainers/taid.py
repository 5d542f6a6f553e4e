"""TAID: temporally adaptive interpolated distillation (Shing et al., ICLR 2025, arXiv 2501.16937), as its release
runs it (SakanaAI/TAID src/distil_losses/taid.py; commits and places in trainers.releases).

The target is the softmax of logits interpolated between the detached student's and the teacher's,
p_t = softmax((1 - t) * stopgrad(z_S) + t * z_T), and the loss is KL(p_t || q_S) (the release's value is the
cross-entropy -sum p_t log q_S, which differs by the constant H(p_t): the same gradient). t starts at t_start; after
each step's loss J (the release's value: the cross-entropy, a mean over the step's tokens) the first step only
records J_prev = J, and every later one sets delta = (J_prev - J) / (J_prev + 1e-15), m <- beta * m + (1 - beta) *
delta, t <- min(t_end, max(t_linear, t + alpha * sigmoid(m) * (1 - t))), with t_linear = t_start + (t_end -
t_start) * progress of the step whose loss it was (the release's global_step / num_train_steps); with adaptive =
false, t <- t_linear. The new t applies from the next step. Where the harness differs (once per optimiser step,
no checkpointed state) is in trainers.releases.

On cached top-k soft labels the k + 1 bucket log-probs stand in for the logits: softmax is shift-invariant, so the
interpolation is exact on the top-k ids, and the tail bucket interpolates the two tail masses' logs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from kdcore.errors import HarnessError
from trainers.divergences import log_softmax
from trainers.objectives import Objective, Params, TeacherRows, register_method, select_top_param
from trainers.params import param
from trainers.releases import source
from trainers.selection import select_rows
from trainers.topk import student_buckets, teacher_buckets


@dataclass
class TAIDParams(Params):
    t_start: float = param(
        0.4,
        "initial interpolation weight t (0 = student, 1 = teacher)",
        kind="float",
        low=0.0,
        high=1.0,
        open_high=True,
        source=source("taid", "t_start"),
    )
    t_end: float = param(
        1.0,
        "final interpolation weight t",
        kind="float",
        low=0.0,
        high=1.0,
        open_low=True,
        source=source("taid", "t_end"),
    )
    alpha: float = param(
        5e-4, "step size of the adaptive update of t", kind="float", low=0.0, high=1.0, source=source("taid", "alpha")
    )
    beta: float = param(
        0.99,
        "momentum of the relative loss change",
        kind="float",
        low=0.0,
        high=1.0,
        open_high=True,
        source=source("taid", "beta"),
    )
    adaptive: bool = param(
        True,
        "adapt t to the loss (false: linear schedule t_start -> t_end)",
        kind="bool",
        source=source("taid", "adaptive"),
    )
    select_top: float = select_top_param()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.t_start > self.t_end:
            raise HarnessError(f"taid needs t_start <= t_end, got t_start={self.t_start} > t_end={self.t_end}")


class Schedule:
    """TAID's interpolation weight, updated once per optimiser step from the step's mean loss."""

    def __init__(self, params: TAIDParams) -> None:
        self.params = params
        self.t = params.t_start
        self.momentum = 0.0
        self.previous_loss = math.inf
        self.progress: float | None = None  # the step whose losses are being collected
        self.loss_sum, self.loss_count = 0.0, 0

    def linear(self, progress: float) -> float:
        p = self.params
        return p.t_start + (p.t_end - p.t_start) * progress

    def at(self, progress: float) -> float:
        """t for the step at `progress`, first folding in the step before it (calls within a step share t)."""
        if progress != self.progress:
            if self.progress is None:
                self.t = self.linear(progress)  # t_start on a fresh run; the linear schedule on a resumed one
            elif self.loss_count:
                self._update(self.loss_sum / self.loss_count, self.progress)
            self.progress, self.loss_sum, self.loss_count = progress, 0.0, 0
        return self.t

    def record(self, losses: Tensor) -> None:
        """Add a chunk's per-row schedule losses (the release's cross-entropy) to the step's mean."""
        self.loss_sum += float(losses.detach().sum())
        self.loss_count += losses.numel()

    def _update(self, loss: float, progress: float) -> None:
        """The release's update_t after the loss of the step at `progress`."""
        p = self.params
        if not math.isfinite(loss):
            return
        if math.isinf(self.previous_loss):
            self.previous_loss = loss
            return
        change = (self.previous_loss - loss) / (self.previous_loss + 1e-15)
        self.momentum = p.beta * self.momentum + (1.0 - p.beta) * change
        step = p.alpha * (1.0 / (1.0 + math.exp(-self.momentum))) * (1.0 - self.t)
        target = self.linear(progress)
        self.t = min(p.t_end, max(target, self.t + step)) if p.adaptive else target
        self.previous_loss = loss


def taid_target(student_logprobs: Tensor, teacher_logprobs: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """log p_t = log_softmax((1 - t) stopgrad(s) + t * teacher) and log_softmax(s), from log-probs (or logits);
    -inf entries (an empty top-k tail) are clamped to the lowest float, so they contribute exactly 0."""
    lowest = torch.finfo(student_logprobs.dtype).min
    student_logprobs, teacher_logprobs = student_logprobs.clamp(min=lowest), teacher_logprobs.clamp(min=lowest)
    target = torch.log_softmax((1.0 - t) * student_logprobs.detach() + t * teacher_logprobs, dim=-1)
    return target, torch.log_softmax(student_logprobs, dim=-1)


def taid_loss(student_logprobs: Tensor, teacher_logprobs: Tensor, t: float) -> Tensor:
    """KL(softmax((1 - t) stopgrad(s) + t * teacher) || softmax(s)) per row."""
    target, student = taid_target(student_logprobs, teacher_logprobs, t)
    return (target.exp() * (target - student)).sum(-1)


def taid_cross_entropy(student_logprobs: Tensor, teacher_logprobs: Tensor, t: float) -> Tensor:
    """-sum p_t log q_S per row, detached: the release's loss value, which drives its schedule."""
    with torch.no_grad():
        target, student = taid_target(student_logprobs, teacher_logprobs, t)
        return -(target.exp() * student).sum(-1)


@register_method
class TAID(Objective):
    name = "taid"
    description = (
        "TAID: KL(p_t || q_S), p_t = softmax((1 - t) stopgrad(z_S) + t z_T); t from t_start toward t_end, "
        "t <- min(t_end, max(linear, t + alpha sigmoid(m) (1 - t))), m the momentum of the relative loss change"
    )
    Params = TAIDParams
    soft_labels = True

    def __init__(self, params: TAIDParams | None = None) -> None:
        super().__init__(params)
        self.schedule = Schedule(self.params)

    def token_losses(self, logits: Tensor, targets: Tensor, teacher: TeacherRows, progress: float):
        t = self.schedule.at(progress)
        if teacher.logits is not None:
            student, target = log_softmax(logits), log_softmax(teacher.logits)
        else:
            student = student_buckets(logits, teacher.topk_ids)
            target = teacher_buckets(teacher.topk_ids, teacher.topk_logprobs)
        losses = taid_loss(student, target, t)
        self.schedule.record(taid_cross_entropy(student, target, t))
        soft = select_rows(logits, losses, self.params.select_top)
        return {"loss": soft, "soft_loss": soft.detach(), "taid_t": torch.full_like(soft, t).detach()}
