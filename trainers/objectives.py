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
import torch.nn.functional as F
from torch import Tensor

from harness.errors import HarnessError, unknown_choice


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
    completions: ClassVar[str] = "teacher"  # whose completions it trains on: reference | teacher | student
    soft_labels: ClassVar[bool] = False  # whether it reads the teacher's distribution

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
    """Per-row cross-entropy in float32."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


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


@register_method
class Soft(Objective):
    name = "soft"
    description = "token-level KD: a divergence to the teacher's distribution on teacher completions (soft labels)"
    Params = SoftParams
    soft_labels = True

    def token_losses(self, logits, targets, teacher, progress):
        soft = soft_term(self.params, logits, teacher)
        return {"loss": soft, "soft_loss": soft.detach()}


@dataclass
class HybridParams(SoftParams):
    alpha: float = 0.5  # weight of the soft term under the static weighting; hard gets 1 - alpha


@register_method
class Hybrid(Objective):
    name = "hybrid"
    description = "hard + soft labels: (1 - alpha) * CE(teacher tokens) + alpha * divergence (static weight)"
    Params = HybridParams
    soft_labels = True

    def soft_weight(self, logits: Tensor, targets: Tensor, teacher: TeacherRows, progress: float) -> Tensor:
        """Per-row weight of the soft term, in [0, 1]."""
        return torch.full_like(targets, self.params.alpha, dtype=torch.float32)

    def token_losses(self, logits, targets, teacher, progress):
        hard = cross_entropy_rows(logits, targets)
        soft = soft_term(self.params, logits, teacher)
        weight = self.soft_weight(logits, targets, teacher, progress)
        return {
            "loss": (1 - weight) * hard + weight * soft,
            "hard_loss": hard.detach(),
            "soft_loss": soft.detach(),
            "soft_weight": weight.detach(),
        }
