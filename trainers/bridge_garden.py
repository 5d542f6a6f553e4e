"""The Bridge-Garden release's losses: `release_loss` and the per-row terms the `hybrid` method trains with.

Release: ghwang-s/bridge_garden_hybrid_kd_release, commit 07f00fc6bbeb1f5d70652efa4d0d0fa49abf9bdc (Apache-2.0).
`release_loss(phi_type, ...)` is the value of its `SFTTrainer.compute_loss` (llm_hybrid_kd/trl_trainer/sft_trainer.py)
for `--phi_type phi_type --div div` with a teacher, and for `phi_type="hybrid_gkd"` the `HybridGKDTrainer.compute_loss`
value (hybrid_gkd_trainer.py). P = teacher, Q = student, y = the label, CE = -log q(y), N = valid rows, w =
`distill_weight`, KD = the `div` term below; every mean is over valid rows.

Divergences (`--div`, per row; `ab` is the default of train_sft.py and sft_config.py):
- ab (distill_alpha a, distill_beta b): `ab_div_loss`, the alpha-beta divergence
  -1/(ab) sum(p^a q^b - a/(a+b) p^(a+b) - b/(a+b) q^(a+b)), with the release's branches at a = 0, b = 0, a + b = 0
  (|.| < 1e-8) and a non-finite row counted as 0. (1, 0) is KL(P||Q).
- sfkl: `skewed_forward_kl`, -sum p log max(0.1 p + 0.9 q, eps32) (a cross-entropy: not 0 at P = Q).
- srkl: `skewed_reverse_kl`, -sum q (log max(0.9 p + 0.1 q, eps32) - log q).
- tv: `tv_distance`, 1/2 sum |p - q|.
- akl: `akd_loss` (mu 0.5): h KL(P||Q) + (1 - h) KL(Q||P), h = e^(-mu H(P)) / (e^(-mu H(P)) + e^(-mu H(Q))),
  H(X) = -sum x log(x + 1e-10); h is not detached (its gradient through H(Q) is part of the loss).
- jsd: `js_distance` (lam 0.1): lam KL(Q||M) + (1 - lam) KL(P||M), M = 0.9 p + 0.1 q.

phi_types (`--phi_type`):
- sft, random_label, temperature_schedule_*, chi2: (1 - w) H + w KD, H = CE; for random_label CE against uniformly
  drawn labels; for temperature_schedule_high_to_low / _low_to_high KD = T^2 KL(P_T || Q_T) (softmax at T, whatever
  `div`), T from temperature_max to temperature_min (or back) linearly in `progress`; for chi2 H = the IQ-Learn term.
- curriculum_weight: w_t = w * progress / curriculum_warmup_ratio during the warm-up, then w; reverse_curriculum_weight:
  w_t = 1 - (1 - w) * progress / ratio, then w; chi2_curriculum: chi2 with the curriculum_weight w_t.
- adap_sft: p(y) CE + (1 - p(y)) ab; reverse_adap_sft: (1 - p(y)) CE + p(y) ab.
- entropy_sft_distill: (1 - s) CE + s ab; entropy_sft_sft: s CE + (1 - s) ab, s = clamp((sum p^g - 1) /
  (V^(1-g) - 1), 0, 1), g = entropy_gamma.
- wsl: CE + w * r ab, r = clamp(1 - exp(-clamp(log q(y) / log p(y), -10, 10)), 0, 1) with q(y), p(y) clamped to
  1e-8 and log p(y) = -1e-8 where |log p(y)| < 1e-8, detached; reverse_wsl: r = clamp(exp(-ratio), 0, 1).
- soft_kd_entropy_reg: (1 - w) CE + w KD - entropy_reg_weight * mean H(Q) (the entropy's gradient kept).
- The adaptive, wsl and entropy phi_types always use ab (the release computes the `div` term and then replaces it).
- chi2 (`_compute_kd_loss`, sequence level): with z the student's logits, V_t = logsumexp z_t, Q_t = z_t[y_t], V'_t =
  V_(t+1) where the next position is valid (else 0), k the index of t among its sequence's valid rows,
  phi(x) = x - x^2/4: loss = -(1/N sum_t gamma^k [(1/alpha) phi(alpha (Q_t - gamma V'_t)) - (V_t - gamma V'_t)]
  + mean over sequences of [gamma^K / (alpha (1 - gamma))] phi(alpha (1 - gamma) V_last) - gamma^K V_last), K, V_last
  at the sequence's last valid row (no terminal term when 1 - gamma < 1e-6). Nothing is detached.
- hybrid_gkd: lambda_fkl * ab + lambda_sft * CE(argmax P) (`HybridGKDTrainer`, its kd_loss_type fixed to ab_div).
A non-finite total is replaced by 0, as the release does.

Defaults and their sources (release files, commit above): distill_weight 0.2, distill_alpha 1.0, distill_beta 0.0,
entropy_gamma 0.1, curriculum_warmup_ratio 0.2, alpha 0.05, gamma 0.9999, div ab: train_sft.py's argparse (which
overrides sft_config.py's distill_weight 0.5); temperature_min 1.0, temperature_max 4.0, entropy_reg_weight 0.1:
sft_config.py (train_sft.py has no flags for them); lambda_fkl 0.1, lambda_sft 0.9, lmbda 0.2, temperature 1.0:
examples/train_hybrid_gkd.sh (train_hybrid_gkd.py's argparse defaults are 1.0, 1.0, 1.0, 1.0); its distill_alpha 1.0,
distill_beta 0.0: gkd_config.py (train_hybrid_gkd.py passes none).

On the top-k cache (`hybrid` without an online teacher) the same formulas run over the k + 1 buckets (the teacher's
top-k ids and one tail bucket, `trainers.topk`): p, q are the bucket distributions, p(y) is the target's bucket (the
tail's mass when y is outside the top k, an upper bound), the entropy weighting's V is the number of buckets (V when
k = V), and the temperature schedule tempers the bucket log-probs. CE, wsl's q(y), H(Q) and chi2 read only the
student's logits and are exact. At k = V all of it equals the online value.

Where the harness differs from the release, and why:
- progress is the loop's step / max_steps. The release's curriculum ramp is step / int(total * ratio) (equal when
  total * ratio is an integer) and its temperature ramp step / (total - 1) (it reaches temperature_min at the last
  step; the harness's last step is at (total - 1) / total).
- Normalisation: the release divides CE by the accumulated batch's token count (num_items_in_batch) and the KD terms by
  the micro-batch's; the harness averages every term over each micro-batch's rows (equal without gradient
  accumulation). chi2's normaliser counts completion tokens before the shift (including a label at position 0, which
  nothing predicts; a prompt always precedes it here), and under several processes the release divides by the mean
  token count per process where the harness scales the terminal term by its own process's rows per sequence.
- Precision: the release takes its softmaxes in float32; here float32, or float64 when the logits are float64.
- Rows whose log-probs are -inf (an empty top-k tail) count as probability 0 on both sides; the release masks
  non-finite logits per divergence in ways that agree on finite logits.
- random_label in training draws its labels from a generator seeded by the step and the chunk's targets, so the
  backward pass's recomputation draws the same ones; the release draws from the global generator.
- hybrid-gkd: its off-policy micro-batches train on the data set's reference answers, as the release's (seq_kd
  false, gkd_config.py; `seq_kd=true`: the teacher's cached completions), and the student samples up to the pair's
  completion budget (the release's example: 512 new tokens).
- train_sft.py loads no teacher when distill_weight <= 0 (the loss is then the base term alone); release_loss always
  has the teacher, as compute_loss with a teacher does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from kdcore.errors import HarnessError, unknown_choice
from kdcore.registry import Registry
from trainers.params import check_fields, param

RELEASE = "ghwang-s/bridge_garden_hybrid_kd_release@07f00fc"
TRAIN_SFT = f"{RELEASE} llm_hybrid_kd/train_scripts/train_sft.py"
SFT_CONFIG = f"{RELEASE} llm_hybrid_kd/trl_trainer/sft_config.py"
HYBRID_GKD_SH = f"{RELEASE} llm_hybrid_kd/examples/train_hybrid_gkd.sh"
GKD_CONFIG = f"{RELEASE} llm_hybrid_kd/trl_trainer/gkd_config.py"

DIVS = ("ab", "sfkl", "srkl", "tv", "akl", "jsd")
SEQUENCE_LEVEL = ("chi2", "chi2_curriculum")  # they need whole sequences (next-state value, terminal term)
EPS32 = torch.finfo(torch.float32).eps


@dataclass
class ReleaseParams:
    """The release's SFT+KD hyperparameters (names and defaults of train_sft.py / sft_config.py)."""

    distill_weight: float = param(
        0.2,
        "w: the KD term's weight in (1 - w) H + w KD, the curriculum's ceiling, wsl's KD scale",
        kind="float",
        low=0.0,
        high=1.0,
        source=f"{TRAIN_SFT} --distill_weight (sft_config.py: 0.5)",
    )
    distill_alpha: float = param(
        1.0, "ab divergence alpha ((1, 0): forward KL)", kind="float", source=f"{TRAIN_SFT} --distill_alpha"
    )
    distill_beta: float = param(0.0, "ab divergence beta", kind="float", source=f"{TRAIN_SFT} --distill_beta")
    entropy_gamma: float = param(
        0.1,
        "entropy_sft_*: the exponent g of the teacher's power sum sum p^g",
        kind="float",
        low=0.0,
        open_low=True,
        source=f"{TRAIN_SFT} --entropy_gamma",
    )
    curriculum_warmup_ratio: float = param(
        0.2,
        "*curriculum*: fraction of training over which the weight ramps",
        kind="float",
        low=0.0,
        high=1.0,
        source=f"{TRAIN_SFT} --curriculum_warmup_ratio",
    )
    alpha: float = param(
        0.05,
        "chi2: alpha of the IQ-Learn objective",
        kind="float",
        low=0.0,
        open_low=True,
        source=f"{TRAIN_SFT} --alpha",
    )
    gamma: float = param(0.9999, "chi2: discount", kind="float", low=0.0, high=1.0, source=f"{TRAIN_SFT} --gamma")
    temperature_min: float = param(
        1.0, "temperature_schedule_*: lowest temperature", kind="float", low=0.0, open_low=True, source=SFT_CONFIG
    )
    temperature_max: float = param(
        4.0, "temperature_schedule_*: highest temperature", kind="float", low=0.0, open_low=True, source=SFT_CONFIG
    )
    entropy_reg_weight: float = param(
        0.1, "soft_kd_entropy_reg: weight of the student-entropy bonus", kind="float", source=SFT_CONFIG
    )

    def __post_init__(self) -> None:
        check_fields(self, type(self).__name__)
        if self.temperature_max < self.temperature_min:
            raise HarnessError(
                f"temperature_max ({self.temperature_max}) must be >= temperature_min ({self.temperature_min})"
            )


@dataclass
class HybridGKDLossParams:
    """The release's HybridGKDTrainer loss weights."""

    lambda_fkl: float = param(0.1, "weight of the ab (forward KL) term", kind="float", low=0.0, source=HYBRID_GKD_SH)
    lambda_sft: float = param(
        0.9, "weight of the cross-entropy on the teacher's argmax", kind="float", low=0.0, source=HYBRID_GKD_SH
    )
    distill_alpha: float = param(1.0, "ab divergence alpha", kind="float", source=GKD_CONFIG)
    distill_beta: float = param(0.0, "ab divergence beta", kind="float", source=GKD_CONFIG)

    def __post_init__(self) -> None:
        check_fields(self, type(self).__name__)


@dataclass
class ReleaseRows:
    """What the release's losses read at n completion rows. `student` and `teacher` are log-probs on one support:
    the vocabulary (online) or the k + 1 top-k buckets; `support` is the number of outcomes it stands for."""

    logits: Tensor  # [n, V] student logits
    targets: Tensor  # [n]
    student: Tensor  # [n, K]
    teacher: Tensor  # [n, K]
    student_target: Tensor  # [n] log q(y) over the vocabulary
    teacher_target: Tensor  # [n] log p(y) (top-k: the target's bucket)
    support: int
    sequence: Tensor | None = None  # [n] sequence id; a sequence's rows contiguous, in order
    continues: Tensor | None = None  # [n] bool: the next row is the next position of the same sequence
    rows_per_sequence: float = 1.0  # N / sequences with a row, over the batch the loss is averaged on


def _work(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _finite(logprobs: Tensor) -> Tensor:
    return logprobs.clamp(min=torch.finfo(logprobs.dtype).min)


def _safe(x: Tensor) -> Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def ab_rows(s: Tensor, t: Tensor, alpha: float, beta: float) -> Tensor:
    """`ab_div_loss`'s per-row divergence (log_p = t, log_q = s); non-finite rows are 0."""
    eps = 1e-8
    if alpha == 1.0 and beta == 0.0:  # the (a, 0) branch at a = 1: sum p (log p - log q) - sum p + sum q = KL(P||Q)
        return _safe(_kl(t, s))
    if abs(alpha) < eps and abs(beta) < eps:
        div = 0.5 * _safe(s - t).pow(2).sum(-1)
    elif abs(alpha) < eps:
        div = ((beta * s).exp() * (beta * _safe(s - t) - 1) + (beta * t).exp()).sum(-1) / beta**2
    elif abs(beta) < eps:
        div = ((alpha * t).exp() * (alpha * _safe(t - s) - 1) + (alpha * s).exp()).sum(-1) / alpha**2
    elif abs(alpha + beta) < eps:
        log_r = _safe(s - t)
        div = (alpha * log_r + (-alpha * log_r).exp() - 1).sum(-1) / alpha**2
    else:
        apb = alpha + beta
        term1 = (alpha * t + beta * s).logsumexp(-1).exp()
        term2 = alpha / apb * (apb * t).logsumexp(-1).exp()
        term3 = beta / apb * (apb * s).logsumexp(-1).exp()
        div = -(term1 - term2 - term3) / (alpha * beta)
    return _safe(div)


def _kl(a: Tensor, b: Tensor) -> Tensor:
    """sum exp(a) (a - b) per row, from log-probs."""
    return (a.exp() * (_finite(a) - _finite(b))).sum(-1)


def div_rows(div: str, s: Tensor, t: Tensor, alpha: float = 1.0, beta: float = 0.0) -> Tensor:
    """The release's `--div` term per row, from student and teacher log-probs on one support."""
    if div == "ab":
        return ab_rows(s, t, alpha, beta)
    if div not in DIVS:
        raise unknown_choice("div", div, DIVS)
    p, q = t.exp(), s.exp()
    if div == "sfkl":
        return -(p * (0.1 * p + 0.9 * q).clamp(min=EPS32).log()).sum(-1)
    if div == "srkl":
        return -(q * ((0.9 * p + 0.1 * q).clamp(min=EPS32).log() - _finite(s))).sum(-1)
    if div == "tv":
        return 0.5 * (p - q).abs().sum(-1)
    if div == "akl":
        mu = 0.5
        s1 = (-mu * -(p * (p + 1e-10).log()).sum(-1)).exp()
        s2 = (-mu * -(q * (q + 1e-10).log()).sum(-1)).exp()
        return s1 / (s1 + s2) * _kl(t, s) + s2 / (s1 + s2) * _kl(s, t)
    lam = 0.1  # jsd
    log_m = _finite(((1 - lam) * p + lam * q).log())
    return lam * (q * (_finite(s) - log_m)).sum(-1) + (1 - lam) * (p * (_finite(t) - log_m)).sum(-1)


def tempered_kl_rows(s: Tensor, t: Tensor, temperature: float) -> Tensor:
    """T^2 KL(softmax(t / T) || softmax(s / T)) per row (`_temperature_scheduled_kl_loss`)."""
    log_q = (_finite(s) / temperature).log_softmax(-1)
    log_p = (_finite(t) / temperature).log_softmax(-1)
    return temperature**2 * (log_p.exp() * (log_p - log_q)).sum(-1)


def scheduled_temperature(phi_type: str, progress: float, params: ReleaseParams) -> float:
    """`_get_temperature_schedule_value` with its step / (total - 1) given as `progress`."""
    low, high = params.temperature_min, params.temperature_max
    progress = min(max(progress, 0.0), 1.0)
    if phi_type == "temperature_schedule_high_to_low":
        return high - (high - low) * progress
    return low + (high - low) * progress


def curriculum_weight(phi_type: str, progress: float, params: ReleaseParams) -> float:
    """The curriculum weight at `progress` (= step / total): the ramp during the warm-up, then distill_weight."""
    base, ratio = params.distill_weight, params.curriculum_warmup_ratio
    if progress >= ratio:
        return base
    ramp = progress / ratio
    return 1.0 - ramp * (1.0 - base) if phi_type == "reverse_curriculum_weight" else ramp * base


def smoothness(teacher: Tensor, support: int, gamma: float) -> Tensor:
    """clamp((sum p^g - 1) / (support^(1-g) - 1), 0, 1) per row: 0 for a one-hot teacher, 1 for a uniform one."""
    power_sum = (gamma * _finite(teacher)).exp().sum(-1)
    return ((power_sum - 1.0) / (support ** (1.0 - gamma) - 1.0)).clamp(0.0, 1.0)


def wsl_ratio(student_target: Tensor, teacher_target: Tensor) -> Tensor:
    """clamp(log q(y) / log p(y), -10, 10) with the release's clamps, detached."""
    with torch.no_grad():
        log_q = student_target.exp().clamp(min=1e-8).log()
        log_p = teacher_target.exp().clamp(min=1e-8).log()
        log_p = torch.where(log_p.abs() < 1e-8, torch.full_like(log_p, -1e-8), log_p)
        return (log_q / log_p).clamp(-10.0, 10.0)


def chi2_rows(rows: ReleaseRows, alpha: float, gamma: float) -> Tensor:
    """Per-row share of `_compute_kd_loss`: its mean over the batch's rows is the release's chi2 loss."""
    if rows.sequence is None or rows.continues is None:
        raise ValueError("chi2 needs each row's sequence and whether the next row continues it")
    z = _work(rows.logits)
    n = z.shape[0]
    value = z.logsumexp(-1)
    q_value = z.gather(-1, rows.targets[:, None].long())[:, 0]
    next_value = torch.where(rows.continues, value.roll(-1), torch.zeros_like(value))
    index = torch.arange(n, device=z.device)
    starts = torch.ones(n, dtype=torch.bool, device=z.device)
    starts[1:] = rows.sequence[1:] != rows.sequence[:-1]
    step = index - torch.where(starts, index, torch.zeros_like(index)).cummax(0).values
    discount = torch.pow(torch.tensor(gamma, dtype=z.dtype, device=z.device), step.to(z.dtype))

    def phi(x: Tensor) -> Tensor:
        return x - 0.25 * x * x

    term1 = phi(alpha * (q_value - gamma * next_value)) / alpha
    term2 = -(value - gamma * next_value)
    loss = -discount * (term1 + term2)
    if 1.0 - gamma >= 1e-6:
        scale = alpha * max(1.0 - gamma, 1e-8)
        last = torch.ones(n, dtype=torch.bool, device=z.device)
        last[:-1] = starts[1:]
        terminal = discount / scale * phi(scale * value) - discount * value
        loss = loss - torch.where(last, terminal, torch.zeros_like(terminal)) * rows.rows_per_sequence
    return loss


@dataclass(frozen=True)
class WeightingInputs:
    """What a phi_type's weighting reads: the rows, the release's parameters, the fraction of training done, the
    `div` term's name and, for random_label, the drawn labels."""

    rows: ReleaseRows
    params: ReleaseParams
    progress: float
    div: str
    random_targets: Tensor | None

    def student(self) -> Tensor:
        return _work(self.rows.student)

    def teacher(self) -> Tensor:
        return _work(self.rows.teacher)

    def cross_entropy(self) -> Tensor:
        return -_work(self.rows.student_target)

    def ab(self) -> Tensor:
        return ab_rows(self.student(), self.teacher(), self.params.distill_alpha, self.params.distill_beta)

    def div_term(self) -> Tensor:
        return div_rows(self.div, self.student(), self.teacher(), self.params.distill_alpha, self.params.distill_beta)


@dataclass(frozen=True)
class WeightedTerms:
    """A phi_type's per-row loss: hard_weight * hard + soft_weight * soft + extra."""

    hard: Tensor
    hard_weight: Tensor
    soft: Tensor
    soft_weight: Tensor
    extra: Tensor | float = 0.0


Weighting = Callable[[WeightingInputs], WeightedTerms]
WEIGHTINGS: Registry[Weighting] = Registry("phi_type")  # the release's --phi_type, each one function below


def _mixed(hard: Tensor, soft: Tensor, weight: float | Tensor) -> WeightedTerms:
    """(1 - weight) hard + weight soft."""
    ones = torch.ones_like(hard)
    return WeightedTerms(hard, ones * (1 - weight), soft, ones * weight)


@WEIGHTINGS.register("sft")
def _sft(x: WeightingInputs) -> WeightedTerms:
    return _mixed(x.cross_entropy(), x.div_term(), x.params.distill_weight)


@WEIGHTINGS.register("soft_kd_entropy_reg")
def _soft_kd_entropy_reg(x: WeightingInputs) -> WeightedTerms:
    log_q = _work(x.rows.logits).log_softmax(-1)
    entropy = -(log_q.exp() * log_q).sum(-1)
    terms = _mixed(x.cross_entropy(), x.div_term(), x.params.distill_weight)
    return replace(terms, extra=-x.params.entropy_reg_weight * entropy)


@WEIGHTINGS.register("random_label")
def _random_label(x: WeightingInputs) -> WeightedTerms:
    if x.random_targets is None:
        raise ValueError("random_label needs random_targets")
    hard = -_work(x.rows.logits).log_softmax(-1).gather(-1, x.random_targets[:, None].long())[:, 0]
    return _mixed(hard, x.div_term(), x.params.distill_weight)


def _curriculum(phi_type: str) -> Weighting:
    def weighting(x: WeightingInputs) -> WeightedTerms:
        return _mixed(x.cross_entropy(), x.div_term(), curriculum_weight(phi_type, x.progress, x.params))

    return weighting


def _temperature_schedule(phi_type: str) -> Weighting:
    def weighting(x: WeightingInputs) -> WeightedTerms:
        temperature = scheduled_temperature(phi_type, x.progress, x.params)
        soft = tempered_kl_rows(x.student(), x.teacher(), temperature)
        return _mixed(x.cross_entropy(), soft, x.params.distill_weight)

    return weighting


def _chi2(phi_type: str) -> Weighting:
    def weighting(x: WeightingInputs) -> WeightedTerms:
        weight = (
            curriculum_weight(phi_type, x.progress, x.params) if "curriculum" in phi_type else x.params.distill_weight
        )
        return _mixed(chi2_rows(x.rows, x.params.alpha, x.params.gamma), x.div_term(), weight)

    return weighting


def _adaptive(phi_type: str) -> Weighting:
    """adap_sft / reverse_adap_sft: CE and ab weighted by the teacher's probability of the label."""

    def weighting(x: WeightingInputs) -> WeightedTerms:
        p_target = _work(x.rows.teacher_target).exp().detach()
        hard_weight, soft_weight = (p_target, 1 - p_target) if phi_type == "adap_sft" else (1 - p_target, p_target)
        return WeightedTerms(x.cross_entropy(), hard_weight, x.ab(), soft_weight)

    return weighting


def _entropy(phi_type: str) -> Weighting:
    """entropy_sft_distill / entropy_sft_sft: CE and ab weighted by the teacher's smoothness."""

    def weighting(x: WeightingInputs) -> WeightedTerms:
        smooth = smoothness(x.teacher(), x.rows.support, x.params.entropy_gamma).detach()
        hard_weight, soft_weight = (1 - smooth, smooth) if phi_type == "entropy_sft_distill" else (smooth, 1 - smooth)
        return WeightedTerms(x.cross_entropy(), hard_weight, x.ab(), soft_weight)

    return weighting


def _wsl(phi_type: str) -> Weighting:
    """wsl / reverse_wsl: CE + w r ab, r from the student's and the teacher's log-probs of the label."""

    def weighting(x: WeightingInputs) -> WeightedTerms:
        ratio = wsl_ratio(_work(x.rows.student_target), _work(x.rows.teacher_target))
        weight = -torch.expm1(-ratio) if phi_type == "wsl" else torch.exp(-ratio)
        hard = x.cross_entropy()
        return WeightedTerms(hard, torch.ones_like(hard), x.ab(), x.params.distill_weight * weight.clamp(0.0, 1.0))

    return weighting


def _register(make: Callable[[str], Weighting], *phi_types: str) -> None:
    for phi_type in phi_types:
        WEIGHTINGS.add(phi_type, make(phi_type))


_register(_curriculum, "curriculum_weight", "reverse_curriculum_weight")
_register(_temperature_schedule, "temperature_schedule_high_to_low", "temperature_schedule_low_to_high")
_register(_chi2, "chi2", "chi2_curriculum")
_register(_adaptive, "adap_sft", "reverse_adap_sft")
_register(_entropy, "entropy_sft_distill", "entropy_sft_sft")
_register(_wsl, "wsl", "reverse_wsl")
PHI_TYPES = tuple(WEIGHTINGS)


def release_rows(
    phi_type: str,
    div: str,
    rows: ReleaseRows,
    params: ReleaseParams,
    progress: float,
    random_targets: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-row `loss` (with grad) whose mean over the rows is the release's loss, and detached `hard_loss`,
    `soft_loss` and `soft_weight` (the base term, the KD term and the KD term's weight)."""
    weighting = WEIGHTINGS.lookup(phi_type)
    if div not in DIVS:
        raise unknown_choice("div", div, DIVS)
    terms = weighting(WeightingInputs(rows, params, progress, div, random_targets))
    loss = terms.hard_weight * terms.hard + terms.soft_weight * terms.soft + terms.extra
    return {
        "loss": loss,
        "hard_loss": terms.hard.detach(),
        "soft_loss": terms.soft.detach(),
        "soft_weight": terms.soft_weight.detach(),
    }


def hybrid_gkd_rows(
    student: Tensor, teacher: Tensor, student_argmax_target: Tensor, params: HybridGKDLossParams
) -> dict[str, Tensor]:
    """Per-row HybridGKDTrainer loss: lambda_fkl * ab + lambda_sft * CE(teacher argmax), from student and teacher
    log-probs over the vocabulary and the student's log-prob of the teacher's argmax."""
    soft = ab_rows(_work(student), _work(teacher), params.distill_alpha, params.distill_beta)
    hard = -_work(student_argmax_target)
    loss = params.lambda_fkl * soft + params.lambda_sft * hard
    return {"loss": loss, "hard_loss": hard.detach(), "soft_loss": soft.detach()}


def release_loss(
    phi_type: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    progress: float = 0.0,
    div: str = "ab",
    generator: torch.Generator | None = None,
    **params: float,
) -> Tensor:
    """The release's training loss (0-dim, with its gradient) for logits [B, T, V] aligned with `labels` [B, T]
    (position t predicts labels[:, t]; -100 is ignored). `progress` = step / total steps; `params` take the release's
    names and defaults (module docstring); `generator` draws random_label's labels (global RNG when None)."""
    if student_logits.shape != teacher_logits.shape or student_logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits [B, T, V] of equal shapes and labels [B, T] expected, got {tuple(student_logits.shape)}, "
            f"{tuple(teacher_logits.shape)}, {tuple(labels.shape)}"
        )
    valid = labels != -100
    logits, teacher, targets = student_logits[valid], teacher_logits[valid], labels[valid]
    student_lp, teacher_lp = _work(logits).log_softmax(-1), _work(teacher).log_softmax(-1)
    if phi_type == "hybrid_gkd":
        config = HybridGKDLossParams(**params)
        argmax = teacher.argmax(-1)
        terms = hybrid_gkd_rows(student_lp, teacher_lp, student_lp.gather(-1, argmax[:, None])[:, 0], config)
    else:
        batch, position = valid.nonzero(as_tuple=True)
        n = targets.shape[0]
        continues = torch.zeros(n, dtype=torch.bool, device=labels.device)
        continues[:-1] = (batch[1:] == batch[:-1]) & (position[1:] == position[:-1] + 1)
        sequences = int(valid.any(-1).sum())
        rows = ReleaseRows(
            logits=logits,
            targets=targets,
            student=student_lp,
            teacher=teacher_lp,
            student_target=student_lp.gather(-1, targets[:, None])[:, 0],
            teacher_target=teacher_lp.gather(-1, targets[:, None])[:, 0],
            support=student_logits.shape[-1],
            sequence=batch,
            continues=continues,
            rows_per_sequence=n / max(sequences, 1),
        )
        random_targets = None
        if phi_type == "random_label":
            drawn = torch.randint(0, student_logits.shape[-1], labels.shape, generator=generator, device=labels.device)
            random_targets = drawn[valid]
        terms = release_rows(phi_type, div, rows, ReleaseParams(**params), progress, random_targets)
    loss = terms["loss"].sum() / max(int(valid.sum()), 1)
    return loss if torch.isfinite(loss) else torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)
