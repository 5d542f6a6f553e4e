"""Per-position divergences between a teacher distribution P and a student distribution Q.

Everything here is a pure function of normalised log-probabilities over the last axis: it returns one value per
position (the last axis reduced, nothing else), computed in float32 (float64 if an input is float64) whatever the
input dtype. Every formula is written so that it is exactly zero where P == Q, stays finite for large logits, and
treats zero-probability entries (log-prob -inf, e.g. masked vocabulary rows or an empty top-k tail bucket) safely:
-inf is clamped to the dtype's lowest finite value, so exp() of it is exactly 0 and 0 * log 0 terms vanish.

Conventions (P = teacher, Q = student), and where each one comes from:

- fkl  KL(P||Q); rkl  KL(Q||P).
- jsd  (beta) beta*KL(P||M) + (1-beta)*KL(Q||M), M = beta*P + (1-beta)*Q. This is TRL's GKD `generalized_jsd_loss`
  (trl.experimental.gkd) for 0 < beta < 1. At the ends the formula is identically zero; TRL substitutes forward KL at
  beta=0 and reverse KL at beta=1 there (the limits of JSD/beta and JSD/(1-beta)). We reject beta outside (0, 1)
  instead of switching silently: use `fkl` or `rkl`.
- sfkl (skew) KL(P || skew*P + (1-skew)*Q); srkl (skew) KL(Q || skew*Q + (1-skew)*P). Same mixtures as DistiLLM's
  `skewed_forward_kl` / `skewed_reverse_kl` (jongwooko/distillm, distillm/losses.py, `lam` = skew). DistiLLM's sfkl
  value is the cross-entropy -sum p log m, i.e. our value plus the teacher entropy: same gradient, but ours is zero
  at P == Q.
- tv   0.5 * sum |P - Q|.
- akl  (mu) Adaptive KL of Wu et al. 2024, "Rethinking Kullback-Leibler Divergence in Knowledge Distillation for
  LLMs", reproducing `get_ratio` / `AKL` from the official code (wutaiqiang/LLM_KD_AKL, AKL.py): sort the teacher's
  probabilities in descending order; the head is the prefix whose cumulative teacher mass is <= mu, and always
  contains the top token; g_head / g_tail = sum |p - q| over head / tail; AKL = g_head/(g_head+g_tail) * KL(P||Q) +
  g_tail/(g_head+g_tail) * KL(Q||P), the weights treated as constants (no gradient; the official code detaches the
  student and the teacher is never trained). Differences: we sort stably (ties keep vocabulary order), weight 1/2 each
  where g_head + g_tail = 0 (the official code divides 0 by 0 there; both KLs are zero), and masked (-inf) entries
  count as probability 0 (the official code sets -inf logits to 0 before its softmax for the weights).
- ab   (alpha, beta) the alpha-beta divergence used by ABKD (Wang et al., ICML 2025, ghwang-s/abkd
  `distillation_llm/distillm/losses.py::ab_div`), defined for alpha, beta, alpha+beta != 0 as
  -1/(alpha*beta) * sum(p^alpha q^beta - alpha/(alpha+beta) p^(alpha+beta) - beta/(alpha+beta) q^(alpha+beta)),
  and on the lines alpha=0, beta=0, alpha+beta=0 by its continuous limits (Cichocki, Cruces & Amari 2011):
  beta=0: 1/alpha^2 sum(p^a log(p^a/q^a) - p^a + q^a) with a=alpha (alpha=1: KL(P||Q));
  alpha=0: 1/beta^2 sum(q^b log(q^b/p^b) - q^b + p^b) with b=beta (beta=1: KL(Q||P));
  alpha=-beta: 1/alpha^2 sum((p/q)^alpha - alpha log(p/q) - 1); alpha=beta=0: 1/2 sum (log p - log q)^2.
  ABKD's code scales its three limit branches by 1/alpha (1/beta) instead of 1/alpha^2 (1/beta^2); the two agree only
  at the FKL (1, 0) and RKL (0, 1) points, and only the squared form is the limit of the general formula. Negative
  alpha, beta or alpha+beta raise near-zero probabilities to negative powers: the value can overflow to inf there.
  The default (0.5, 0.5), the midpoint between FKL and RKL on the alpha+beta=1 line, equals 2*sum(sqrt p - sqrt q)^2;
  ABKD tunes (alpha, beta) per task.
- jsd-skew (lam) DistiLLM's `js_distance` (jongwooko/distillm, distillm/losses.py; the same function ships in the CSD
  release, aailab-kaist/CSD task_agnostic_distillation/csd/losses.py): (1-lam)*KL(P||M) + lam*KL(Q||M) with
  M = (1-lam)*P + lam*Q, default lam = 0.9, the function's own default, which DistiLLM's finetune.py uses (it calls
  `js_distance` without lam). It is `jsd` with beta = 1 - lam, under the skew parametrisation.

Logit divergences (on_logits; Kim et al. 2025, "Distillation of LLMs via Concrete Score Matching", arXiv
2509.25837, official code aailab-kaist/CSD, task_agnostic_distillation/csd/losses.py). They compare logits, not
distributions; `token_divergence` passes them the raw logits and the temperature only sets their weights, as in the
release (`csd`, `dld_ablation`: d uses the raw logits, the weight softmax(z / temp)). All weights are held fixed (no
gradient through them). Entries that are -inf on either side (masked) are left out.

- csd (weights) with d = z_S - z_T and fixed weightings a, b over the vocabulary:
  1/4 sum_ij a_i b_j (d_i - d_j)^2 = 1/4 (E_a[e^2] + E_b[e^2]), e = d - E_a[d]. `weights` 'x' or 'x-y' with x, y in
  student, teacher, uniform. The default 'teacher-student' is the task-specific release's `csd_ts`
  (aailab-kaist/CSD task_specific_distillation/train/ddp_csd.py `CSD_TS`, chosen by every config in
  task_specific_distillation/config/csd_distill/: GSM8K, translation, summarisation): its surrogate's gradient is
  1/2 a*(d - E_b d) + 1/2 b*(d - E_a d) with a = softmax(z_T), b = softmax(z_S), the gradient of the value above (we
  return the value, the release a surrogate with that gradient). 'student' (a = b = softmax(z_S / T): 1/2 Var_w(d),
  gradient w * (d - E_w[d])) is the task-agnostic release's `csd`; 'uniform-student' its CSD (U,S)
  (`csd_weighting_function`). Invariant to adding a constant to either logit vector.
- dld (weights, normalization): 1/4 sum_v w_v (n(z_S)_v - n(z_T)_v)^2, w = softmax(z_S/T), softmax(z_T/T) or uniform
  (1/V over the support), n one of the release's normalisations (`dld_ablation`): none, mean (z - mean z), min
  (z - min z), max (z - max z), std ((z - mean) / (std + 1e-9), std with Bessel's correction as torch.std),
  range (2 (z - min) / (max - min + 1e-9) - 1), plus logsoftmax (z - logsumexp z), ours. Default uniform weights on
  raw logits (`dld_ablation(w="U", normalize="no")`): the paper's direct logit distillation, an MSE between raw
  logits over the whole vocabulary. It needs the raw logits (`needs_full_logits`): `topk_divergence` refuses it.

From log-probs (`divergence_from_logprobs`) a logit divergence takes the log-probs as logits at temperature 1: exact
for csd (shift-invariant). On cached top-k soft labels (`topk_divergence`) the k + 1 buckets are the vocabulary for
csd: the cached log-probs equal the teacher's logits up to one per-position shift on the top-k ids, and the
student's bucket log-probs equal its logits up to another, so every pair (i, j) of top-k ids enters csd exactly as
in the full-vocabulary value, with exactly the full-vocabulary weights at T = 1; the tail bucket acts as one more
token whose logit is the log of the tail mass (at T != 1 its weight is (tail mass)^(1/T) renormalised rather than
the tempered tail mass). It equals the full value at k = V.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from kdcore.errors import HarnessError
from kdcore.registry import Registry


@dataclass(frozen=True)
class DivergenceSpec:
    """A registered divergence: its name, a one-line description, default parameters and the formula."""

    name: str
    description: str
    defaults: Mapping[str, float | str]
    fn: Callable[..., Tensor]  # (teacher_logprobs, student_logprobs, **params) -> per-position values
    # A logit divergence (csd, dld) reads logits, not normalised log-probs, and applies the temperature itself:
    # fn(teacher_logits, student_logits, temperature, **params). Fed log-probs, it treats them as logits.
    on_logits: bool = False
    # Defined on the raw logits of the whole vocabulary (dld): cached top-k log-probs cannot stand in for them.
    needs_full_logits: bool = False


def _kl(x: Tensor, y: Tensor) -> Tensor:
    """KL(X||Y) from log-probs over the last axis; terms with exp(x) == 0 contribute exactly 0."""
    return (x.exp() * (x - y)).sum(-1)


def _log_mix(t: Tensor, s: Tensor, w: float) -> Tensor:
    """log(w * exp(t) + (1 - w) * exp(s)) elementwise, for 0 <= w <= 1.

    Written around the larger argument with log1p/expm1, so it equals t (== s) exactly where t == s, never overflows,
    and has the right gradient at ties (both branches are finite, so torch.where passes no NaN back). Relative
    accuracy is about eps / min(w, 1 - w).
    """
    if w == 0.0:
        return s
    if w == 1.0:
        return t
    from_t = t + torch.log1p((1.0 - w) * torch.expm1((s - t).clamp(max=0.0)))
    from_s = s + torch.log1p(w * torch.expm1((t - s).clamp(max=0.0)))
    return torch.where(t >= s, from_t, from_s)


def _exp_diff(x: Tensor, y: Tensor) -> Tensor:
    """exp(x) - exp(y), factored around the larger argument: exactly 0 at x == y, no overflow, exact gradients."""
    x_larger = x.exp() * -torch.expm1((y - x).clamp(max=0.0))
    y_larger = y.exp() * torch.expm1((x - y).clamp(max=0.0))
    return torch.where(x >= y, x_larger, y_larger)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise HarnessError(message)


def _fkl(t: Tensor, s: Tensor) -> Tensor:
    return _kl(t, s)


def _rkl(t: Tensor, s: Tensor) -> Tensor:
    return _kl(s, t)


def _jsd(t: Tensor, s: Tensor, beta: float) -> Tensor:
    _require(0.0 < beta < 1.0, f"jsd beta must be in (0, 1), got {beta} (for beta 0 or 1 use fkl or rkl)")
    m = _log_mix(t, s, beta)
    return beta * _kl(t, m) + (1.0 - beta) * _kl(s, m)


def _sfkl(t: Tensor, s: Tensor, skew: float) -> Tensor:
    _require(0.0 <= skew < 1.0, f"sfkl skew must be in [0, 1), got {skew}")
    return _kl(t, _log_mix(t, s, skew))


def _srkl(t: Tensor, s: Tensor, skew: float) -> Tensor:
    _require(0.0 <= skew < 1.0, f"srkl skew must be in [0, 1), got {skew}")
    return _kl(s, _log_mix(t, s, 1.0 - skew))


def _tv(t: Tensor, s: Tensor) -> Tensor:
    return 0.5 * (t.exp() - s.exp()).abs().sum(-1)


def _akl(t: Tensor, s: Tensor, mu: float) -> Tensor:
    _require(0.0 < mu <= 1.0, f"akl mu must be in (0, 1], got {mu}")
    with torch.no_grad():
        p_sorted, order = t.exp().sort(dim=-1, descending=True, stable=True)
        gaps = (p_sorted - s.exp().gather(-1, order)).abs()
        in_tail = p_sorted.cumsum(-1) > mu
        in_tail[..., 0] = False
        g_tail = gaps.masked_fill(~in_tail, 0.0).sum(-1)
        g_total = gaps.sum(-1)
        w_tail = torch.where(g_total > 0, g_tail / g_total.clamp(min=torch.finfo(t.dtype).tiny), 0.5)
    return (1.0 - w_tail) * _kl(t, s) + w_tail * _kl(s, t)


def _ab_general(t: Tensor, s: Tensor, alpha: float, beta: float) -> Tensor:
    """The alpha-beta divergence for alpha, beta, alpha + beta != 0, per element before the sum.

    With u = log p - log q and total = alpha + beta, each term is
    [ (alpha/total) * (p^total - q^total) - (p^alpha q^beta - q^total) ] / (alpha*beta),
    whose two differences are computed by `_exp_diff`, so the term is exactly 0 where p == q and its rounding error
    shrinks with |u| (it is ~eps*|u|*q^total/|beta|: callers put the larger of |alpha|, |beta| in `beta`).
    """
    total = alpha + beta
    power_gap = _exp_diff(total * t, total * s)
    cross_gap = _exp_diff(total * s + alpha * (t - s), total * s)
    return ((alpha / total) * power_gap - cross_gap) / (alpha * beta)


def _ab_beta_zero(t: Tensor, s: Tensor, alpha: float) -> Tensor:
    """The beta -> 0 limit per element: (p^a log(p^a/q^a) - p^a + q^a) / a^2 with a = alpha."""
    return (alpha * (t - s) * (alpha * t).exp() - _exp_diff(alpha * t, alpha * s)) / alpha**2


def _ab(t: Tensor, s: Tensor, alpha: float, beta: float) -> Tensor:
    lowest = torch.finfo(t.dtype).min  # where the caller clamped -inf log-probs
    both_zero = (t == lowest) & (s == lowest)
    # Entries where p = q = 0 contribute 0; give them p = q = 1 (where every term below is exactly 0) so negative
    # powers of 0 never produce inf * 0.
    t = torch.where(both_zero, 0.0, t)
    s = torch.where(both_zero, 0.0, s)
    if alpha == 0.0 and beta == 0.0:
        terms = 0.5 * (t - s) ** 2
    elif beta == 0.0:
        terms = _ab_beta_zero(t, s, alpha)
    elif alpha == 0.0:
        terms = _ab_beta_zero(s, t, beta)  # D^(0,b)(P||Q) = D^(b,0)(Q||P)
    elif alpha + beta == 0.0:
        u = alpha * (t - s)
        terms = (torch.expm1(u) - u) / alpha**2
    elif abs(beta) >= abs(alpha):
        terms = _ab_general(t, s, alpha, beta)
    else:
        terms = _ab_general(s, t, beta, alpha)  # D^(a,b)(P||Q) = D^(b,a)(Q||P)
    return terms.sum(-1)


def _jsd_skew(t: Tensor, s: Tensor, lam: float) -> Tensor:
    _require(0.0 < lam < 1.0, f"jsd-skew lam must be in (0, 1), got {lam}")
    m = _log_mix(t, s, 1.0 - lam)
    return (1.0 - lam) * _kl(t, m) + lam * _kl(s, m)


WEIGHTS = ("student", "teacher", "uniform")
NORMALIZATIONS = ("none", "mean", "min", "max", "std", "range", "logsoftmax")


def _support(t: Tensor, s: Tensor) -> Tensor:
    """Entries finite on both sides (-inf, clamped to the lowest float, marks a masked entry)."""
    lowest = torch.finfo(t.dtype).min
    return (t > lowest) & (s > lowest)


def _weight(kind: str, t: Tensor, s: Tensor, temperature: float, support: Tensor) -> Tensor:
    """A fixed (no-gradient) weighting over the vocabulary: softmax(z_S / T), softmax(z_T / T) or uniform over
    the support."""
    with torch.no_grad():
        if kind == "uniform":
            return support.to(t.dtype) / support.sum(-1, keepdim=True).clamp(min=1)
        logits = s if kind == "student" else t
        if temperature != 1.0:
            logits = logits / temperature
        if bool(support.all()):
            return torch.softmax(logits, dim=-1)
        return torch.softmax(logits.masked_fill(~support, -torch.inf), dim=-1).nan_to_num(0.0)


def _weight_pair(weights: str) -> tuple[str, str]:
    """'student' -> (student, student); 'teacher-student' -> (teacher, student)."""
    parts = tuple(weights.split("-"))
    pair = parts * 2 if len(parts) == 1 else parts
    valid = [w for w in WEIGHTS] + [f"{a}-{b}" for a in WEIGHTS for b in WEIGHTS if a != b]
    _require(len(pair) == 2 and all(p in WEIGHTS for p in pair), f"csd weights {weights!r} unknown; valid: {valid}")
    return pair[0], pair[1]


def _csd(t: Tensor, s: Tensor, temperature: float, weights: str) -> Tensor:
    first, second = _weight_pair(weights)
    support = _support(t, s)
    d = s - t if bool(support.all()) else torch.where(support, s - t, 0.0)
    wa = _weight(first, t, s, temperature, support)
    wb = wa if second == first else _weight(second, t, s, temperature, support)
    return _PairwiseGap.apply(d, wa, wb)


class _PairwiseGap(torch.autograd.Function):
    """1/4 sum_ij a_i b_j (d_i - d_j)^2 per row for fixed weightings a, b, and its O(V) gradient in d.

    The value is 1/4 (E_a[e^2] + E_b[e^2]) with e = d - E_a[d] (the same function of d, computed around the a-mean so
    large logits cancel before squaring); the gradient is 1/2 a (d - E_b[d]) + 1/2 b (d - E_a[d]), i.e. a (d - E_a[d])
    when a = b. Written out so that autograd keeps two [n, V] tensors instead of the whole expression's graph.
    """

    @staticmethod
    def forward(ctx, d: Tensor, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        ea = d - (a * d).sum(-1, keepdim=True)
        sq = ea * ea
        if b is a:
            ctx.save_for_backward(a * ea)
            return 0.5 * (a * sq).sum(-1)
        eb = d - (b * d).sum(-1, keepdim=True)
        ctx.save_for_backward(0.5 * (a * eb + b * ea))
        return 0.25 * ((a * sq).sum(-1) + (b * sq).sum(-1))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (grad_d,) = ctx.saved_tensors
        return grad[..., None] * grad_d, None, None


def _masked_mean(x: Tensor, support: Tensor) -> Tensor:
    return torch.where(support, x, 0.0).sum(-1, keepdim=True) / support.sum(-1, keepdim=True).clamp(min=1)


def _normalize(x: Tensor, how: str, support: Tensor) -> Tensor:
    """The CSD release's logit normalisations (dld_ablation), over the support; logsoftmax is ours."""
    if how == "none":
        return x
    if how == "mean":
        return x - _masked_mean(x, support)
    if how == "logsoftmax":
        return x - x.masked_fill(~support, -torch.inf).logsumexp(-1, keepdim=True)
    low = x.masked_fill(~support, torch.inf).amin(-1, keepdim=True)
    high = x.masked_fill(~support, -torch.inf).amax(-1, keepdim=True)
    if how == "min":
        return x - low
    if how == "max":
        return x - high
    if how == "range":
        return 2.0 * (x - low) / (high - low + 1e-9) - 1.0
    centred = x - _masked_mean(x, support)
    count = support.sum(-1, keepdim=True)
    var = torch.where(support, centred * centred, 0.0).sum(-1, keepdim=True) / (count - 1).clamp(min=1)
    return centred / (var.sqrt() + 1e-9)


def _dld(t: Tensor, s: Tensor, temperature: float, weights: str, normalization: str) -> Tensor:
    _require(weights in WEIGHTS, f"dld weights {weights!r} unknown; valid: {', '.join(WEIGHTS)}")
    _require(
        normalization in NORMALIZATIONS,
        f"dld normalization {normalization!r} unknown; valid: {', '.join(NORMALIZATIONS)}",
    )
    support = _support(t, s)
    w = _weight(weights, t, s, temperature, support)
    d = torch.where(support, _normalize(s, normalization, support) - _normalize(t, normalization, support), 0.0)
    return 0.25 * (w * d * d).sum(-1)


DIVERGENCES: Registry[DivergenceSpec] = Registry("divergence")
for _spec in (
    DivergenceSpec("fkl", "forward KL(P||Q): mass-covering", {}, _fkl),
    DivergenceSpec("rkl", "reverse KL(Q||P): mode-seeking", {}, _rkl),
    DivergenceSpec("jsd", "generalized JSD (GKD): beta*KL(P||M) + (1-beta)*KL(Q||M)", {"beta": 0.5}, _jsd),
    DivergenceSpec("sfkl", "skew forward KL (DistiLLM): KL(P || skew*P + (1-skew)*Q)", {"skew": 0.1}, _sfkl),
    DivergenceSpec("srkl", "skew reverse KL (DistiLLM): KL(Q || skew*Q + (1-skew)*P)", {"skew": 0.1}, _srkl),
    DivergenceSpec("tv", "total variation: 0.5 * sum |P - Q|", {}, _tv),
    DivergenceSpec("akl", "adaptive KL (Wu et al. 2024): head/tail-gap-weighted FKL + RKL", {"mu": 0.5}, _akl),
    DivergenceSpec("ab", "alpha-beta divergence (ABKD): (1,0) is FKL, (0,1) RKL", {"alpha": 0.5, "beta": 0.5}, _ab),
    DivergenceSpec(
        "jsd-skew",
        "DistiLLM's js_distance: (1-lam)*KL(P||M) + lam*KL(Q||M), M = (1-lam)*P + lam*Q (= jsd beta=1-lam)",
        {"lam": 0.9},
        _jsd_skew,
    ),
    DivergenceSpec(
        "csd",
        "concrete score distillation (Kim et al. 2025): 1/4 sum_ij a_i b_j (d_i - d_j)^2, d = z_S - z_T; "
        "weights a-b from student/teacher/uniform, fixed; default teacher-student (the release's csd_ts)",
        {"weights": "teacher-student"},
        _csd,
        on_logits=True,
    ),
    DivergenceSpec(
        "dld",
        "direct logit distillation: 1/4 sum_v w_v (n(z_S)_v - n(z_T)_v)^2, w fixed (student/teacher/uniform), "
        "n a logit normalisation (none, mean, min, max, std, range, logsoftmax)",
        {"weights": "uniform", "normalization": "none"},
        _dld,
        on_logits=True,
        needs_full_logits=True,
    ),
):
    DIVERGENCES.add(_spec.name, _spec)


def divergence_from_logprobs(name: str, student_logprobs: Tensor, teacher_logprobs: Tensor, **params: float) -> Tensor:
    """The divergence `name` at every position, from normalised log-probs over the last axis (any leading shape).

    Returns the leading shape, in float64 if either input is float64, else float32. Parameters not given take the
    registered defaults; an unknown name or parameter raises HarnessError listing the valid ones.
    """
    spec = _check_params(name, params)
    if student_logprobs.shape != teacher_logprobs.shape:
        raise ValueError(f"student {tuple(student_logprobs.shape)} and teacher {tuple(teacher_logprobs.shape)} differ")
    dtype = torch.float64 if torch.float64 in (student_logprobs.dtype, teacher_logprobs.dtype) else torch.float32
    teacher, student = _floored(teacher_logprobs, dtype), _floored(student_logprobs, dtype)
    values = _values(spec, params)
    return spec.fn(teacher, student, 1.0, **values) if spec.on_logits else spec.fn(teacher, student, **values)


def _values(spec: DivergenceSpec, params: Mapping[str, float | str]) -> dict[str, float | str]:
    """The parameters with defaults filled in, each converted to its default's type (float or str)."""
    values: dict[str, float | str] = {}
    for key, default in spec.defaults.items():
        value = params.get(key, default)
        if isinstance(default, str):
            _require(isinstance(value, str), f"{spec.name} {key} must be a string, got {value!r}")
            values[key] = value
        else:
            _require(
                isinstance(value, int | float) and not isinstance(value, bool),
                f"{spec.name} {key} must be a number, got {value!r}",
            )
            values[key] = float(value)
    return values


def _check_params(name: str, params: Mapping[str, object]) -> DivergenceSpec:
    spec = DIVERGENCES.lookup(name)
    for key in params:
        if key not in spec.defaults:
            valid = ", ".join(sorted(spec.defaults)) or "none"
            raise HarnessError(f"unknown parameter {key!r} for divergence {name!r}; valid parameters: {valid}")
    return spec


def _floored(logprobs: Tensor, dtype: torch.dtype) -> Tensor:
    """`logprobs` in `dtype` with -inf raised to the lowest finite value; copied only when it holds a -inf (a min
    over the tensor costs a read, the clamped copy a full-vocabulary write, and its gradient mask another)."""
    logprobs = logprobs.to(dtype)
    lowest = torch.finfo(dtype).min
    if logprobs.numel() and bool(logprobs.amin() < lowest):
        return logprobs.clamp(min=lowest)
    return logprobs


class _ForwardKL(torch.autograd.Function):
    """KL(softmax(teacher) || softmax(student)) per row from logits, the student's gradient written by hand.

    The value is the same as `_kl` of the two log-softmaxes (clamped as `divergence_from_logprobs` clamps them, so
    exactly 0 for identical inputs), and the gradient is autograd's through log_softmax: g * (q * sum(p) - p). The
    forward makes three [..., V] tensors and keeps two of them (the student's log-probs and the teacher's
    probabilities), working in place on the teacher's log-probs; the backward makes one. Autograd through the
    generic path makes about nine.
    """

    @staticmethod
    def forward(ctx, student: Tensor, teacher: Tensor) -> Tensor:
        lowest = torch.finfo(student.dtype).min
        student_logprobs = torch.log_softmax(student, dim=-1).clamp_(min=lowest)
        teacher_logprobs = torch.log_softmax(teacher, dim=-1).clamp_(min=lowest)
        probs = teacher_logprobs.exp()
        ctx.save_for_backward(student_logprobs, probs)
        return teacher_logprobs.sub_(student_logprobs).mul_(probs).sum(-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        student_logprobs, probs = ctx.saved_tensors
        grad = grad[..., None]
        out = student_logprobs.exp().mul_(grad * probs.sum(-1, keepdim=True))
        return out.addcmul_(probs, grad, value=-1.0), None


def token_divergence(
    name: str, student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, **params: float
) -> Tensor:
    """The divergence `name` between softmax(teacher_logits / T) and softmax(student_logits / T) at every position.

    Logits of any float dtype are promoted to float32 (kept float64) before the log-softmax. No reduction and no
    T^2 scaling: the caller weights and reduces.
    """
    if not temperature > 0:
        raise HarnessError(f"temperature must be > 0, got {temperature}")
    if _check_params(name, params).on_logits:
        return logit_divergence(name, student_logits, teacher_logits, temperature=temperature, **params)
    if (
        name == "fkl"
        and not params
        and not teacher_logits.requires_grad
        and student_logits.shape == teacher_logits.shape
    ):
        student, teacher = scaled_logits(student_logits, temperature), scaled_logits(teacher_logits, temperature)
        dtype = torch.promote_types(student.dtype, teacher.dtype)
        return _ForwardKL.apply(student.to(dtype), teacher.to(dtype))
    return divergence_from_logprobs(
        name, log_softmax(student_logits, temperature), log_softmax(teacher_logits, temperature), **params
    )


def logit_divergence(
    name: str, student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0, **params: float | str
) -> Tensor:
    """A logit divergence (csd, dld) between raw logits (or anything equal to them up to a per-position shift,
    for the shift-invariant ones), promoted to float32 (float64 stays), -inf clamped as for log-probs."""
    spec = _check_params(name, params)
    _require(spec.on_logits, f"divergence {name!r} compares distributions, not logits: use token_divergence")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} differ")
    dtype = torch.float64 if torch.float64 in (student_logits.dtype, teacher_logits.dtype) else torch.float32
    teacher, student = _floored(teacher_logits, dtype), _floored(student_logits, dtype)
    return spec.fn(teacher, student, temperature, **_values(spec, params))


def scaled_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """logits / temperature in float32 (float64 stays float64); no division at temperature 1."""
    logits = logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32)
    return logits if temperature == 1.0 else logits / temperature


def log_softmax(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """log_softmax(logits / temperature) over the last axis, in float32 (float64 stays float64)."""
    return torch.log_softmax(scaled_logits(logits, temperature), dim=-1)
