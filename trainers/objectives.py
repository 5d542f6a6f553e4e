"""Distillation methods: one small registered class each.

An objective turns a chunk of student logits (rows = completion positions) into a per-row loss, plus
detached per-row diagnostics. The training loop owns everything else (batching, chunking, optimiser).
A new method is a subclass with a `name`, a `description`, a `Params` dataclass and `token_losses`,
decorated with `@register_method`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from kdcore.errors import HarnessError, unknown_choice
from trainers.plan import DataPlan


@dataclass
class TeacherRows:
    """The teacher's signal for a set of rows: top-k soft labels from the cache, or full online logits."""

    topk_ids: Tensor | None = None  # [n, k]
    topk_logprobs: Tensor | None = None  # [n, k]
    logits: Tensor | None = None  # [n, V]

    def __getitem__(self, rows: slice) -> TeacherRows:
        return TeacherRows(*(None if t is None else t[rows] for t in (self.topk_ids, self.topk_logprobs, self.logits)))


@dataclass
class Params:
    """Base class of every method's parameters."""


class Objective(ABC):
    """A distillation method. Class attributes say what data it needs; `token_losses` is its loss."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    completions: ClassVar[str] = "teacher"  # what it trains on: reference answers or teacher completions
    soft_labels: ClassVar[bool] = False  # whether it reads the teacher's distribution
    on_policy: ClassVar[bool] = False  # whether it swaps in the student's own samples (needs the online teacher)

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def token_losses(
        self, logits: Tensor, targets: Tensor, teacher: TeacherRows | None, progress: float
    ) -> dict[str, Tensor]:
        """Per-row terms for `logits` [n, V] and `targets` [n]: `loss` (with grad) and detached diagnostics.

        `progress` is the fraction of training done, in [0, 1] (for schedules such as a curriculum).
        """

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    def data_plan(self, teacher_signal: str = "topk") -> DataPlan:
        """What the driver prepares for this method; `teacher_signal` ('topk' or 'online') is the run's choice
        for methods that read soft labels (on-policy methods always need the online teacher)."""
        if self.on_policy:
            signal = "online"
        elif self.soft_labels:
            signal = teacher_signal
        else:
            signal = "none"
        return DataPlan(completions=self.completions, teacher_signal=signal, on_policy=self.on_policy)  # type: ignore[arg-type]


METHODS: dict[str, type[Objective]] = {}


def register_method(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make an Objective available by its `name`."""
    METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return sorted(METHODS)


def load_method(name: str, **params: Any) -> Objective:
    """Instantiate method `name` with `params` (unknown names or parameters give a one-line HarnessError)."""
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    cls = METHODS[name]
    valid = {f.name: f for f in dataclasses.fields(cls.Params)}
    for key in params:
        if key not in valid:
            raise unknown_choice(f"parameter for method {name!r}:", key, valid)
    try:
        return cls(cls.Params(**params))
    except (TypeError, ValueError) as err:
        raise HarnessError(f"bad parameters for method {name!r}: {err}") from None


def cross_entropy_rows(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-row cross-entropy in float32: `F.cross_entropy`'s values, computed by `trainers.topk.bucket_logprobs` (with
    no buckets), whose hand-written backward makes one [n, V] tensor where F.cross_entropy's makes two."""
    from trainers.topk import bucket_logprobs

    targets = targets[..., None]
    return -bucket_logprobs(logits.float(), targets[..., :0], targets)[1][..., 0]


def entropy_rows(logprobs: Tensor) -> Tensor:
    """Per-row entropy of normalised log-probs (0 log 0 = 0)."""
    return -(logprobs.exp() * logprobs).nan_to_num(0.0).sum(-1)


@register_method
class SFT(Objective):
    name = "sft"
    description = "cross-entropy on the data set's reference answers (no teacher)"
    completions = "reference"

    def token_losses(self, logits, targets, teacher, progress):
        return {"loss": cross_entropy_rows(logits, targets)}


@register_method
class Hard(Objective):
    name = "hard"
    description = "sequence-level KD: cross-entropy on teacher-generated completions (hard labels)"

    def token_losses(self, logits, targets, teacher, progress):
        return {"loss": cross_entropy_rows(logits, targets)}


@dataclass
class SoftParams(Params):
    divergence: str = "fkl"
    temperature: float = 1.0
    div_params: dict[str, float] = field(default_factory=dict)


def soft_term(params: SoftParams, logits: Tensor, teacher: TeacherRows) -> Tensor:
    """The per-row divergence between teacher and student, from top-k soft labels or online logits."""
    from trainers.divergences import token_divergence
    from trainers.topk import topk_divergence

    if teacher.logits is not None:
        return token_divergence(
            params.divergence, logits, teacher.logits, temperature=params.temperature, **params.div_params
        )
    return topk_divergence(
        params.divergence,
        logits,
        teacher.topk_ids,
        teacher.topk_logprobs,
        temperature=params.temperature,
        **params.div_params,
    )


def soft_and_cross_entropy(
    params: SoftParams, logits: Tensor, targets: Tensor, teacher: TeacherRows
) -> tuple[Tensor, Tensor]:
    """`soft_term` and the per-row cross-entropy on `targets`; from one softmax of the logits where the two share
    it (top-k soft labels at temperature 1), else each from its own."""
    if teacher.logits is None and params.temperature == 1.0:
        from trainers.topk import topk_divergence_and_cross_entropy

        return topk_divergence_and_cross_entropy(
            params.divergence, logits, teacher.topk_ids, teacher.topk_logprobs, targets, **params.div_params
        )
    return soft_term(params, logits, teacher), cross_entropy_rows(logits, targets)


@register_method
class Soft(Objective):
    name = "soft"
    description = "token-level KD: a divergence to the teacher's distribution on teacher completions (soft labels)"
    Params = SoftParams
    soft_labels = True

    def token_losses(self, logits, targets, teacher, progress):
        soft = soft_term(self.params, logits, teacher)
        return {"loss": soft, "soft_loss": soft.detach()}


WEIGHTINGS = ("static", "confidence", "entropy", "curriculum", "risk")


@dataclass
class HybridParams(SoftParams):
    alpha: float = 0.5  # soft weight for `static`, and the ceiling `curriculum` ramps to; hard gets 1 - weight
    weighting: str = "static"
    gamma: float = 2.0  # exponent of the smoothness measure sum(p^gamma) for `entropy`
    warmup: float = 0.3  # fraction of training over which `curriculum` ramps the soft weight from 0 to alpha

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise unknown_choice("weighting", self.weighting, WEIGHTINGS)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")


def teacher_logprobs(teacher: TeacherRows, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The teacher's log-probs per row (full vocabulary online; top-k + tail bucket from the cache) and the
    log-prob of each row's target token (a target outside the top-k gets the tail's mass, an upper bound)."""
    from trainers.topk import teacher_buckets

    if teacher.logits is not None:
        logprobs = torch.log_softmax(teacher.logits.float(), dim=-1)
        return logprobs, logprobs.gather(-1, targets[:, None])[:, 0]
    logprobs = teacher_buckets(teacher.topk_ids, teacher.topk_logprobs)
    match = teacher.topk_ids.long() == targets[:, None]
    slot = torch.where(match.any(-1), match.long().argmax(-1), torch.full_like(targets, logprobs.shape[-1] - 1))
    return logprobs, logprobs.gather(-1, slot[:, None])[:, 0]


def smoothness(logprobs: Tensor, vocab_size: int, gamma: float) -> Tensor:
    """1 - (sum p^gamma rescaled to [0, 1]): 0 for a one-hot teacher, 1 for a uniform one over `vocab_size`."""
    floor = vocab_size ** (1.0 - gamma)
    collision = (logprobs * gamma).exp().sum(-1)
    return (1.0 - (collision - floor) / (1.0 - floor)).clamp(0.0, 1.0)


@register_method
class Hybrid(Objective):
    name = "hybrid"
    description = (
        "hard + soft labels: (1 - w) * CE(teacher tokens) + w * divergence; w per --param weighting: "
        "static (alpha), confidence (1 - teacher prob of the token), entropy (teacher smoothness), "
        "curriculum (ramps to alpha), risk (1 - estimated bridge risk)"
    )
    Params = HybridParams
    soft_labels = True

    def soft_weight(self, logits: Tensor, targets: Tensor, teacher: TeacherRows, progress: float) -> Tensor:
        """Per-row weight of the soft term, in [0, 1]."""
        params = self.params
        if params.weighting == "static":
            return torch.full_like(targets, params.alpha, dtype=torch.float32)
        if params.weighting == "curriculum":
            ramp = min(1.0, progress / params.warmup) if params.warmup > 0 else 1.0
            return torch.full_like(targets, params.alpha * ramp, dtype=torch.float32)
        logprobs, target_logprob = teacher_logprobs(teacher, targets)
        if params.weighting == "confidence":
            return 1.0 - target_logprob.exp()
        if params.weighting == "entropy":
            return smoothness(logprobs, logits.shape[-1], params.gamma)
        from harness.analysis.estimate import estimated_risk

        return 1.0 - estimated_risk(logprobs)

    def token_losses(self, logits, targets, teacher, progress):
        soft, hard = soft_and_cross_entropy(self.params, logits, targets, teacher)
        weight = self.soft_weight(logits, targets, teacher, progress)
        return {
            "loss": (1 - weight) * hard + weight * soft,
            "hard_loss": hard.detach(),
            "soft_loss": soft.detach(),
            "soft_weight": weight.detach(),
        }


@dataclass
class GKDParams(Params):
    lmbda: float = 0.5  # fraction of micro-batches whose completions the student samples itself (on-policy)
    beta: float = 0.5  # JSD mixture: 0 = forward KL, 1 = reverse KL (TRL's convention)
    temperature: float = 0.9  # the student's sampling temperature for on-policy completions
    max_new_tokens: int | None = None  # on-policy completion budget (default: the pair's)


@register_method
class GKD(Objective):
    name = "gkd"
    description = (
        "on-policy generalized KD (TRL GKD): with prob. lmbda train on student samples; JSD(beta) to an online teacher"
    )
    Params = GKDParams
    soft_labels = True
    on_policy = True

    def jsd(self, logits: Tensor, teacher: TeacherRows) -> Tensor:
        from trainers.divergences import token_divergence

        return token_divergence("jsd", logits, teacher.logits, beta=self.params.beta)

    def token_losses(self, logits, targets, teacher, progress):
        soft = self.jsd(logits, teacher)
        return {"loss": soft, "soft_loss": soft.detach()}


@dataclass
class HybridGKDParams(GKDParams):
    alpha: float = 0.5  # weight of the JSD term; the teacher-argmax cross-entropy gets 1 - alpha


@register_method
class HybridGKD(GKD):
    name = "hybrid-gkd"
    description = "gkd plus a hard term: (1 - alpha) * CE(teacher argmax) + alpha * JSD(beta), on the same samples"
    Params = HybridGKDParams

    def token_losses(self, logits, targets, teacher, progress):
        soft = self.jsd(logits, teacher)
        hard = cross_entropy_rows(logits, teacher.logits.argmax(-1))
        alpha = self.params.alpha
        return {"loss": (1 - alpha) * hard + alpha * soft, "hard_loss": hard.detach(), "soft_loss": soft.detach()}
