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
from kdcore.registry import Registry
from trainers.bridge_garden import (
    DIVS,
    GKD_CONFIG,
    HYBRID_GKD_SH,
    PHI_TYPES,
    SEQUENCE_LEVEL,
    HybridGKDLossParams,
    ReleaseParams,
    ReleaseRows,
    div_rows,
    hybrid_gkd_rows,
    release_rows,
)
from trainers.bridge_garden import (
    RELEASE as BRIDGE_GARDEN,
)
from trainers.params import check_fields, param
from trainers.plan import DataPlan, OnPolicy
from trainers.releases import source
from trainers.selection import entropy_rows as entropy_rows  # re-exported for trainers.loop
from trainers.selection import select_rows


@dataclass
class TeacherRows:
    """The teacher's signal for a set of rows (top-k soft labels from the cache, or full online logits), and the
    rows' own values of the objective's `row_fields`."""

    topk_ids: Tensor | None = None  # [n, k]
    topk_logprobs: Tensor | None = None  # [n, k]
    logits: Tensor | None = None  # [n, V]
    sequence: Tensor | None = None  # [n] the example each row belongs to (its rows contiguous, in order)
    rows_per_sequence: float = 1.0  # the micro-batch's rows / examples with a row (sequence-level terms)
    # [n, 2]: the mean over the row's whole sequence of the student's and the teacher's log-prob of each target
    # token (for objectives whose `sequence_logprobs` is true)
    sequence_logprobs: Tensor | None = None
    # [n] per row: the example fields the objective names in `row_fields` (trainers.batch.Batch.row_values)
    row_values: dict[str, Tensor] = field(default_factory=dict)

    def __getitem__(self, rows: slice) -> TeacherRows:
        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[rows]

        return TeacherRows(
            cut(self.topk_ids),
            cut(self.topk_logprobs),
            cut(self.logits),
            cut(self.sequence),
            self.rows_per_sequence,
            cut(self.sequence_logprobs),
            {name: values[rows] for name, values in self.row_values.items()},
        )


@dataclass
class Params:
    """Base class of every method's parameters: fields declared with `trainers.params.param` are checked on
    construction (type, range, choices), so bad values fail before anything loads."""

    def __post_init__(self) -> None:
        check_fields(self, type(self).__name__)


class Objective(ABC):
    """A distillation method. Class attributes say what data it needs; `token_losses` is its loss."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    completions: ClassVar[str] = "teacher"  # what it trains on: reference answers or teacher completions
    soft_labels: ClassVar[bool] = False  # whether it reads the teacher's distribution
    # example fields with one value per example (from `batch_examples`) that reach `token_losses` per row, as
    # `TeacherRows.row_values` (a method without soft labels then gets a TeacherRows too)
    row_fields: ClassVar[tuple[str, ...]] = ()
    whole_sequences: bool = False  # whether a loss chunk must hold whole sequences (a sequence-level loss)
    # How the loop averages the per-row loss: over the batch's rows ("token"), or over its sequences, each the mean
    # of its own rows ("sequence").
    reduction: ClassVar[str] = "token"

    def __init__(self, params: Params | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def token_losses(
        self, logits: Tensor, targets: Tensor, teacher: TeacherRows | None, progress: float
    ) -> dict[str, Tensor]:
        """Per-row terms for `logits` [n, V] and `targets` [n]: `loss` (with grad) and detached diagnostics.

        `progress` is the fraction of training done, in [0, 1] (for schedules such as a curriculum).
        """

    @property
    def sequence_logprobs(self) -> bool:
        """Whether `token_losses` needs `TeacherRows.sequence_logprobs` (a no-grad pass over the batch first)."""
        return False

    def batch_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The examples a micro-batch trains on, from the data set's (the loop calls it before collating); most
        methods use them as they are."""
        return examples

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    def data_plan(self, teacher_signal: str | None = None) -> DataPlan:
        """What the driver prepares for this method; `teacher_signal` ('topk' or 'online'; None: 'topk') is the
        run's choice for methods that read soft labels (on-policy methods always need the online teacher). The
        plan's `teacher_signal` is what the run uses, whatever was asked. A divergence defined on raw logits over
        the whole vocabulary (dld) makes the online teacher the default, and an explicit 'topk' a one-line error.
        A method with data of its own (on-policy samples, a data source) returns its own plan."""
        if self.soft_labels and needs_full_logits(getattr(self.params, "divergence", None)):
            if teacher_signal == "topk":
                from trainers.topk import refuse_topk

                refuse_topk(self.params.divergence)
            signal = "online"
        elif self.soft_labels:
            signal = teacher_signal or "topk"
        else:
            signal = "none"
        return DataPlan(completions=self.completions, teacher_signal=signal)  # type: ignore[arg-type]


def needs_full_logits(divergence: str | None) -> bool:
    """Whether `divergence` is defined on the teacher's raw logits over the whole vocabulary (see DivergenceSpec)."""
    from trainers.divergences import DIVERGENCES

    return divergence in DIVERGENCES and DIVERGENCES[divergence].needs_full_logits


METHODS: Registry[type[Objective]] = Registry("method", "trainers")  # every module of `trainers` is searched


def register_method(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make an Objective available by its `name`."""
    return METHODS.add(cls.name, cls)


def load_method(name: str, **params: Any) -> Objective:
    """Instantiate method `name` with `params` (unknown names or parameters give a one-line HarnessError)."""
    cls = METHODS.lookup(name)
    valid = {f.name: f for f in dataclasses.fields(cls.Params)}
    for key in params:
        if key not in valid:
            raise unknown_choice(f"parameter for method {name!r}:", key, valid)
    try:
        return cls(cls.Params(**params))
    except HarnessError as err:
        raise HarnessError(f"method {name!r}: {err}") from None
    except (TypeError, ValueError) as err:
        raise HarnessError(f"bad parameters for method {name!r}: {err}") from None


def cross_entropy_rows(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-row cross-entropy in float32 (float64 stays float64): `F.cross_entropy`'s values, computed by
    `trainers.topk.bucket_logprobs` (with no buckets), whose hand-written backward makes one [n, V] tensor where
    F.cross_entropy's makes two."""
    from trainers.topk import bucket_logprobs

    targets = targets[..., None]
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return -bucket_logprobs(logits, targets[..., :0], targets)[1][..., 0]


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


SE_KD = "SE-KD (student-entropy position selection; almogtavor/SE-KD3x)"


def select_top_param() -> Any:
    """The `select_top` parameter every soft-label method offers (SE-KD position selection)."""
    return param(
        1.0,
        "distil only this fraction of rows, those of highest student entropy (per chunk; 1 = all)",
        kind="float",
        low=0.0,
        high=1.0,
        open_low=True,
        source=SE_KD,
    )


@dataclass
class SoftParams(Params):
    divergence: str = param(
        "fkl", "divergence to the teacher", kind="str", source="per divergence (the divergences table below)"
    )
    temperature: float = param(
        1.0,
        "softmax temperature (logit divergences: of their weights)",
        kind="float",
        low=0.0,
        open_low=True,
        source="Hinton et al. 2015",
    )
    div_params: dict[str, float] = param(  # noqa: RUF009 (param returns a dataclass field)
        None, 'the divergence\'s own parameters, e.g. {"beta": 0.5}', kind="dict", source="per divergence"
    )
    select_top: float = select_top_param()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_divergence(self.divergence, self.temperature, self.div_params)


def check_divergence(name: str, temperature: float, params: dict[str, Any]) -> None:
    """Raise the divergence's own HarnessError for an unknown name, parameter or value, on a 1 x 2 dummy."""
    from trainers.divergences import token_divergence

    dummy = torch.zeros(1, 2)
    token_divergence(name, dummy, dummy, temperature=temperature, **params)


def soft_term(params: SoftParams, logits: Tensor, teacher: TeacherRows) -> Tensor:
    """The per-row divergence between teacher and student, from top-k soft labels or online logits."""
    from trainers.divergences import token_divergence
    from trainers.topk import topk_divergence

    if teacher.logits is not None:
        values = token_divergence(
            params.divergence, logits, teacher.logits, temperature=params.temperature, **params.div_params
        )
    else:
        values = topk_divergence(
            params.divergence,
            logits,
            teacher.topk_ids,
            teacher.topk_logprobs,
            temperature=params.temperature,
            **params.div_params,
        )
    return select_rows(logits, values, params.select_top)


@register_method
class Soft(Objective):
    name = "soft"
    description = "token-level KD: a divergence to the teacher's distribution on teacher completions (soft labels)"
    Params = SoftParams
    soft_labels = True

    def token_losses(self, logits, targets, teacher, progress):
        soft = soft_term(self.params, logits, teacher)
        return {"loss": soft, "soft_loss": soft.detach()}


WEIGHTINGS = (*PHI_TYPES, "margin-entropy")


@dataclass
class HybridParams(ReleaseParams):
    weighting: str = param(
        "sft",
        "the release's --phi_type (formulas: trainers.bridge_garden), or margin-entropy (this harness's)",
        kind="str",
        choices=WEIGHTINGS,
        source=f"{BRIDGE_GARDEN} sft_trainer.py compute_loss (the release has no default; sft = its static mix)",
    )
    divergence: str = param(
        "ab",
        "the release's --div: ab (distill_alpha, distill_beta), sfkl, srkl, tv, akl, jsd (its own formulas)",
        kind="str",
        choices=DIVS,
        source=f"{BRIDGE_GARDEN} train_sft.py --div",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weighting.startswith("entropy_sft") and self.entropy_gamma == 1.0:
            raise HarnessError(
                "entropy_gamma = 1 makes the entropy weighting 0 / 0 (sum p = 1); use entropy_gamma != 1"
            )


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


def release_view(logits: Tensor, targets: Tensor, teacher: TeacherRows) -> ReleaseRows:
    """The rows as the release's losses read them: student and teacher log-probs over the vocabulary (online teacher)
    or over the k + 1 top-k buckets (cache), with the sequence of each row."""
    from trainers.topk import bucket_logprobs

    work = logits if logits.dtype == torch.float64 else logits.float()
    if teacher.logits is not None:
        student = work.log_softmax(-1)
        teacher_lp = teacher.logits.to(work.dtype).log_softmax(-1)
        student_target = student.gather(-1, targets[:, None])[:, 0]
        teacher_target = teacher_lp.gather(-1, targets[:, None])[:, 0]
        support = logits.shape[-1]
    else:
        student, extra = bucket_logprobs(work, teacher.topk_ids, targets[:, None])
        student_target = extra[:, 0]
        teacher_lp, teacher_target = teacher_logprobs(teacher, targets)
        support = min(teacher.topk_ids.shape[-1] + 1, logits.shape[-1])
    continues = None
    if teacher.sequence is not None:
        continues = torch.zeros_like(teacher.sequence, dtype=torch.bool)
        continues[:-1] = teacher.sequence[1:] == teacher.sequence[:-1]
    return ReleaseRows(
        logits=logits,
        targets=targets,
        student=student,
        teacher=teacher_lp,
        student_target=student_target,
        teacher_target=teacher_target,
        support=support,
        sequence=teacher.sequence,
        continues=continues,
        rows_per_sequence=teacher.rows_per_sequence,
    )


def random_labels(logits: Tensor, targets: Tensor, progress: float) -> Tensor:
    """Uniform labels over the vocabulary, drawn from a generator seeded by the step and the rows' targets: the
    backward pass's recomputation of a chunk draws the same ones."""
    seed = hash((progress, targets.shape[0], *targets[:64].tolist())) % 2**63
    generator = torch.Generator(device=logits.device).manual_seed(seed)
    return torch.randint(0, logits.shape[-1], targets.shape, generator=generator, device=logits.device)


@register_method
class Hybrid(Objective):
    name = "hybrid"
    description = (
        "hard + soft labels as the Bridge-Garden release trains them: --param weighting=<its --phi_type> (sft: "
        "(1 - w) CE + w KD; adap_sft, entropy_sft_distill, curriculum_weight, wsl, chi2, ...) and --div <its --div> "
        "(ab, sfkl, srkl, tv, akl, jsd: its formulas, not the `soft` method's); margin-entropy: this harness's "
        "(1 - r) CE + r KD, r = 1 - (p1 - p2)(1 - H(P)/log V). Online teacher: the release's values; top-k cache: "
        "the same formulas over the k + 1 buckets (trainers.bridge_garden)"
    )
    Params = HybridParams
    soft_labels = True

    def __init__(self, params: HybridParams | None = None) -> None:
        super().__init__(params)
        self.whole_sequences = self.params.weighting in SEQUENCE_LEVEL

    def token_losses(self, logits, targets, teacher, progress):
        params = self.params
        rows = release_view(logits, targets, teacher)
        if params.weighting == "margin-entropy":
            from trainers.risk_estimate import estimated_risk

            soft = div_rows(params.divergence, rows.student, rows.teacher, params.distill_alpha, params.distill_beta)
            hard = -rows.student_target
            weight = 1.0 - estimated_risk(rows.teacher)
            loss = (1 - weight) * hard + weight * soft
            return {"loss": loss, "hard_loss": hard.detach(), "soft_loss": soft.detach(), "soft_weight": weight}
        drawn = random_labels(logits, targets, progress) if params.weighting == "random_label" else None
        return release_rows(params.weighting, params.divergence, rows, params, progress, drawn)


GKD_SOURCE = "Agarwal et al. 2024 (GKD), TRL GKDTrainer"


@dataclass
class GKDParams(Params):
    lmbda: float = param(
        0.5,
        "fraction of micro-batches whose completions the student samples itself (on-policy)",
        kind="float",
        low=0.0,
        high=1.0,
        source=source("gkd", "lmbda"),
    )
    beta: float = param(
        0.5,
        "JSD mixture: 0 forward KL, 1 reverse KL, between them beta KL(P||M) + (1-beta) KL(Q||M) (TRL's convention)",
        kind="float",
        low=0.0,
        high=1.0,
        source=source("gkd", "beta"),
    )
    temperature: float = param(
        0.9,
        "the student's sampling temperature for on-policy completions (top-k 0, top-p 1; the loss is at 1)",
        kind="float",
        low=0.0,
        open_low=True,
        source=source("gkd", "temperature"),
    )
    seq_kd: bool = param(
        False,
        "off-policy batches: the teacher's cached completions (true) or the data set's reference answers (false)",
        kind="bool",
        source=source("gkd", "seq_kd"),
    )
    max_new_tokens: int | None = param(
        None,
        "on-policy completion budget (null: the pair's; TRL's default is 128)",
        kind="int",
        low=1,
        optional=True,
        source=GKD_SOURCE,
    )
    select_top: float = select_top_param()


def generalized_jsd(logits: Tensor, teacher_logits: Tensor, beta: float) -> Tensor:
    """TRL's generalized_jsd_loss per row: forward KL at beta 0, reverse KL at beta 1, JSD(beta) between."""
    from trainers.divergences import token_divergence

    if beta == 0.0:
        return token_divergence("fkl", logits, teacher_logits)
    if beta == 1.0:
        return token_divergence("rkl", logits, teacher_logits)
    return token_divergence("jsd", logits, teacher_logits, beta=beta)


@register_method
class GKD(Objective):
    name = "gkd"
    description = (
        "on-policy generalized KD (TRL GKD): with prob. lmbda train on student samples, else on the data set's "
        "completions (seq_kd: the teacher's); JSD(beta) to an online teacher"
    )
    Params = GKDParams
    soft_labels = True

    def data_plan(self, teacher_signal: str | None = None) -> DataPlan:
        p = self.params
        completions = "teacher" if p.seq_kd else "reference"
        sampling = OnPolicy(lmbda=p.lmbda, temperature=p.temperature, max_new_tokens=p.max_new_tokens)
        return DataPlan(completions=completions, teacher_signal="online", on_policy=sampling)

    def jsd(self, logits: Tensor, teacher: TeacherRows) -> Tensor:
        return select_rows(logits, generalized_jsd(logits, teacher.logits, self.params.beta), self.params.select_top)

    def token_losses(self, logits, targets, teacher, progress):
        soft = self.jsd(logits, teacher)
        return {"loss": soft, "soft_loss": soft.detach()}


@dataclass
class HybridGKDParams(HybridGKDLossParams):
    lmbda: float = param(
        0.2,
        "fraction of micro-batches whose completions the student samples itself (on-policy)",
        kind="float",
        low=0.0,
        high=1.0,
        source=HYBRID_GKD_SH,
    )
    temperature: float = param(
        1.0,
        "the student's sampling temperature for on-policy completions (top_k 0)",
        kind="float",
        low=0.0,
        open_low=True,
        source=HYBRID_GKD_SH,
    )
    max_new_tokens: int | None = param(
        None,
        "on-policy completion budget (null: the pair's)",
        kind="int",
        low=1,
        optional=True,
        source=f"{HYBRID_GKD_SH} uses 512 on its own data; here each pair sets its budget",
    )
    seq_kd: bool = param(
        False,
        "off-policy batches: the teacher's cached completions (true) or the data set's reference answers (false)",
        kind="bool",
        source=GKD_CONFIG,
    )


@register_method
class HybridGKD(GKD):
    name = "hybrid-gkd"
    description = (
        "the Bridge-Garden release's HybridGKDTrainer: with prob. lmbda on student samples; lambda_fkl * ab "
        "(forward KL at distill_alpha 1, distill_beta 0) + lambda_sft * CE(teacher argmax), online teacher"
    )
    Params = HybridGKDParams

    def token_losses(self, logits, targets, teacher, progress):
        work = logits if logits.dtype == torch.float64 else logits.float()
        student = work.log_softmax(-1)
        teacher_lp = teacher.logits.to(work.dtype).log_softmax(-1)
        argmax = teacher.logits.argmax(-1)
        return hybrid_gkd_rows(student, teacher_lp, student.gather(-1, argmax[:, None])[:, 0], self.params)
