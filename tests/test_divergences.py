"""The divergences against their formulas: hand-computed values, limits, symmetries, zeros and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from kdcore.errors import HarnessError
from trainers.divergences import DIVERGENCES, divergence_from_logprobs, token_divergence

torch.set_num_threads(1)

# Teacher P and student Q on three categories; Q is chosen so AKL's head and tail gaps differ (see test_akl_weights).
P = [0.6, 0.3, 0.1]
Q = [0.4, 0.1, 0.5]


def kl(x: list[float], y: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(x, y, strict=True))


def mix(w: float, x: list[float], y: list[float]) -> list[float]:
    return [w * a + (1 - w) * b for a, b in zip(x, y, strict=True)]


def div(name: str, p: list[float] = P, q: list[float] = Q, **params: float) -> float:
    teacher = torch.tensor(p, dtype=torch.float64).log()
    student = torch.tensor(q, dtype=torch.float64).log()
    return divergence_from_logprobs(name, student, teacher, **params).item()


def ab_formula(alpha: float, beta: float, p: list[float] = P, q: list[float] = Q) -> float:
    """The general alpha-beta divergence, written directly from its definition."""
    s = alpha + beta
    return -sum(a**alpha * b**beta - alpha / s * a**s - beta / s * b**s for a, b in zip(p, q, strict=True)) / (
        alpha * beta
    )


def csd_formula(z_s: list[float], z_t: list[float], a: list[float], b: list[float]) -> float:
    """1/4 sum_ij a_i b_j (d_i - d_j)^2, d = z_s - z_t: the O(V^2) definition."""
    d = [x - y for x, y in zip(z_s, z_t, strict=True)]
    return 0.25 * sum(a[i] * b[j] * (d[i] - d[j]) ** 2 for i in range(len(d)) for j in range(len(d)))


LOG_P, LOG_Q = [math.log(a) for a in P], [math.log(b) for b in Q]

KNOWN_VALUES = {
    ("fkl", ()): kl(P, Q),
    ("rkl", ()): kl(Q, P),
    ("jsd", (("beta", 0.5),)): 0.5 * kl(P, mix(0.5, P, Q)) + 0.5 * kl(Q, mix(0.5, P, Q)),
    ("jsd", (("beta", 0.2),)): 0.2 * kl(P, mix(0.2, P, Q)) + 0.8 * kl(Q, mix(0.2, P, Q)),
    ("sfkl", (("skew", 0.1),)): kl(P, mix(0.1, P, Q)),
    ("srkl", (("skew", 0.1),)): kl(Q, mix(0.1, Q, P)),
    ("tv", ()): 0.5 * (0.2 + 0.2 + 0.4),
    # head = {top token}: gap 0.2; tail gap 0.2 + 0.4 = 0.6 -> weights 1/4, 3/4 (see test_akl_weights).
    ("akl", (("mu", 0.5),)): 0.25 * kl(P, Q) + 0.75 * kl(Q, P),
    ("ab", (("alpha", 0.5), ("beta", 0.5))): 2
    * sum((math.sqrt(a) - math.sqrt(b)) ** 2 for a, b in zip(P, Q, strict=True)),
    ("ab", (("alpha", 2.0), ("beta", 1.0))): ab_formula(2.0, 1.0),
    ("ab", (("alpha", 0.2), ("beta", 0.7))): ab_formula(0.2, 0.7),
    ("ab", (("alpha", 1.5), ("beta", -0.5))): ab_formula(1.5, -0.5),
    ("jsd-skew", (("lam", 0.1),)): 0.9 * kl(P, mix(0.9, P, Q)) + 0.1 * kl(Q, mix(0.9, P, Q)),
    # From log-probs a logit divergence takes them as logits at T = 1: student weights are Q itself.
    ("csd", (("weights", "student"),)): csd_formula(LOG_Q, LOG_P, Q, Q),
    ("csd", (("weights", "teacher-student"),)): csd_formula(LOG_Q, LOG_P, P, Q),
    ("csd", (("weights", "uniform-student"),)): csd_formula(LOG_Q, LOG_P, [1 / 3] * 3, Q),
    ("dld", (("weights", "uniform"), ("normalization", "none"))): 0.25
    * sum((b - a) ** 2 for a, b in zip(LOG_P, LOG_Q, strict=True))
    / 3,
    ("dld", (("weights", "teacher"), ("normalization", "none"))): 0.25
    * sum(p * (b - a) ** 2 for p, a, b in zip(P, LOG_P, LOG_Q, strict=True)),
}


@pytest.mark.parametrize(("name", "params"), list(KNOWN_VALUES), ids=lambda x: str(x))
def test_known_values(name: str, params: tuple) -> None:
    assert div(name, **dict(params)) == pytest.approx(KNOWN_VALUES[name, params], rel=1e-12)


def test_every_divergence_has_a_known_value() -> None:
    assert {name for name, _ in KNOWN_VALUES} == set(DIVERGENCES)


def test_akl_weights_follow_the_head_threshold() -> None:
    # mu = 0.95: head = {0.6, 0.3} (cumulative 0.9 <= 0.95), gap 0.2 + 0.2; tail = {0.1}, gap 0.4 -> 1/2 each.
    assert div("akl", mu=0.95) == pytest.approx(0.5 * kl(P, Q) + 0.5 * kl(Q, P), rel=1e-12)
    # The top token is in the head even when it alone exceeds mu.
    assert div("akl", mu=0.1) == pytest.approx(div("akl", mu=0.5), rel=1e-12)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ((1.0, 0.0), kl(P, Q)),
        ((0.0, 1.0), kl(Q, P)),
        ((0.0, 0.0), 0.5 * sum(math.log(a / b) ** 2 for a, b in zip(P, Q, strict=True))),
        (
            (0.5, 0.0),
            sum(a**0.5 * math.log(a**0.5 / b**0.5) - a**0.5 + b**0.5 for a, b in zip(P, Q, strict=True)) / 0.25,
        ),
        ((0.0, 2.0), sum(b**2 * math.log(b**2 / a**2) - b**2 + a**2 for a, b in zip(P, Q, strict=True)) / 4),
        ((0.5, -0.5), sum((a / b) ** 0.5 - 0.5 * math.log(a / b) - 1 for a, b in zip(P, Q, strict=True)) / 0.25),
        ((-0.5, 0.5), sum((a / b) ** -0.5 + 0.5 * math.log(a / b) - 1 for a, b in zip(P, Q, strict=True)) / 0.25),
    ],
    ids=str,
)
def test_ab_limit_cases(params: tuple[float, float], expected: float) -> None:
    alpha, beta = params
    assert div("ab", alpha=alpha, beta=beta) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("alpha", "beta"), [(1.0, 0.0), (0.0, 1.0), (0.0, 0.0), (0.7, 0.0), (0.0, 0.3), (0.5, -0.5), (-2.0, 2.0)]
)
def test_ab_is_continuous_at_its_limits(alpha: float, beta: float) -> None:
    at_limit = div("ab", alpha=alpha, beta=beta)
    for da, db in [(1e-7, 0.0), (0.0, 1e-7), (-1e-7, 2e-7)]:
        assert div("ab", alpha=alpha + da, beta=beta + db) == pytest.approx(at_limit, rel=1e-5)


def test_jsd_is_symmetric_at_one_half() -> None:
    assert div("jsd", P, Q, beta=0.5) == pytest.approx(div("jsd", Q, P, beta=0.5), rel=1e-12)
    assert div("jsd", P, Q, beta=0.2) == pytest.approx(div("jsd", Q, P, beta=0.8), rel=1e-12)


def test_skewed_kls_reduce_to_plain_kl_without_skew() -> None:
    assert div("sfkl", skew=0.0) == pytest.approx(div("fkl"), rel=1e-12)
    assert div("srkl", skew=0.0) == pytest.approx(div("rkl"), rel=1e-12)


def random_logprobs(*shape: int, dtype: torch.dtype = torch.float64, scale: float = 2.0) -> torch.Tensor:
    return torch.log_softmax(torch.randn(*shape, dtype=dtype) * scale, dim=-1)


def test_tv_bounds() -> None:
    torch.manual_seed(0)
    teacher, student = random_logprobs(64, 9), random_logprobs(64, 9)
    tv = divergence_from_logprobs("tv", student, teacher)
    fkl = divergence_from_logprobs("fkl", student, teacher)
    assert (tv >= 0).all() and (tv <= 1).all()
    assert (tv <= torch.sqrt(fkl / 2) + 1e-12).all()  # Pinsker
    disjoint = torch.tensor([[0.0, -torch.inf], [-torch.inf, 0.0]])
    assert divergence_from_logprobs("tv", disjoint[0], disjoint[1]).item() == 1.0


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_nonnegative_and_exactly_zero_on_identical_inputs(name: str) -> None:
    torch.manual_seed(1)
    teacher, student = random_logprobs(4, 6, 11), random_logprobs(4, 6, 11)
    assert (divergence_from_logprobs(name, student, teacher) >= -1e-12).all()
    assert (divergence_from_logprobs(name, teacher, teacher) == 0).all()
    logits = torch.randn(4, 6, 11, dtype=torch.bfloat16) * 10
    assert (token_divergence(name, logits, logits) == 0).all()


@pytest.mark.parametrize("params", [{"alpha": 2.0, "beta": -1.0}, {"alpha": -0.5, "beta": 0.5}, {"alpha": 0.0}])
def test_ab_exactly_zero_on_identical_inputs_for_other_parameters(params: dict[str, float]) -> None:
    teacher = random_logprobs(5, 7)
    assert (divergence_from_logprobs("ab", teacher, teacher, **params) == 0).all()


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_large_bf16_logits_stay_finite_in_float32(name: str) -> None:
    torch.manual_seed(2)
    student = (torch.randn(3, 5, 32) * 1e4).to(torch.bfloat16)
    teacher = (torch.randn(3, 5, 32) * 1e4).to(torch.bfloat16)
    out = token_divergence(name, student, teacher)
    assert out.shape == (3, 5) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_entries_masked_in_both_distributions_change_nothing(name: str) -> None:
    torch.manual_seed(3)
    teacher, student = random_logprobs(6, 5), random_logprobs(6, 5)
    pad = torch.full((6, 3), -torch.inf, dtype=torch.float64)
    padded = divergence_from_logprobs(name, torch.cat([student, pad], -1), torch.cat([teacher, pad], -1))
    assert torch.allclose(padded, divergence_from_logprobs(name, student, teacher), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fkl", {}),
        ("rkl", {}),
        ("jsd", {"beta": 0.3}),
        ("sfkl", {"skew": 0.1}),
        ("srkl", {"skew": 0.1}),
        ("tv", {}),
        ("ab", {"alpha": 0.2, "beta": 0.7}),
        ("ab", {"alpha": 1.0, "beta": 0.0}),
        ("ab", {"alpha": 0.0, "beta": 1.0}),
        ("ab", {"alpha": 0.0, "beta": 0.0}),
        ("ab", {"alpha": 0.6, "beta": -0.6}),
        ("ab", {"alpha": 1.2, "beta": 0.1}),
    ],
    ids=str,
)
def test_gradients_match_finite_differences(name: str, params: dict[str, float]) -> None:
    torch.manual_seed(4)
    teacher = random_logprobs(3, 7)
    student_logits = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda logits: divergence_from_logprobs(name, torch.log_softmax(logits, -1), teacher, **params),
        (student_logits,),
    )


def test_akl_gradient_treats_its_weights_as_constants() -> None:
    # As in the official code (student detached in the weights): the gradient is w_head*grad FKL + w_tail*grad RKL,
    # not the derivative of the value (the weights jump where tokens cross the head/tail boundary).
    teacher = torch.tensor(P, dtype=torch.float64).log()
    logits = torch.tensor(Q, dtype=torch.float64).log().requires_grad_(True)

    def grad(name: str) -> torch.Tensor:
        return torch.autograd.grad(token_divergence(name, logits, teacher), logits)[0]

    assert torch.allclose(grad("akl"), 0.25 * grad("fkl") + 0.75 * grad("rkl"), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd", "ab"])
def test_gradients_with_respect_to_log_probs_at_ties(name: str) -> None:
    # Entries where teacher and student agree exercise the tie branches of the stable mixtures.
    teacher = random_logprobs(2, 5)
    student = teacher.clone()
    student[:, :2] = random_logprobs(2, 5)[:, :2]
    student.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: divergence_from_logprobs(name, s, teacher), (student,))


def test_descent_along_the_gradient_reduces_each_divergence() -> None:
    torch.manual_seed(5)
    teacher = random_logprobs(8, 10)
    for name in DIVERGENCES:
        logits = torch.randn(8, 10, dtype=torch.float64, requires_grad=True)
        before = token_divergence(name, logits, teacher).sum()
        (grad,) = torch.autograd.grad(before, logits)
        after = token_divergence(name, logits - 1e-3 * grad, teacher).sum()
        assert after < before, name


def test_temperature_scales_the_logits() -> None:
    torch.manual_seed(6)
    student, teacher = torch.randn(4, 9), torch.randn(4, 9)
    assert torch.allclose(
        token_divergence("fkl", student, teacher, temperature=2.0), token_divergence("fkl", student / 2, teacher / 2)
    )
    with pytest.raises(HarnessError, match="temperature"):
        token_divergence("fkl", student, teacher, temperature=0.0)


def test_float64_inputs_stay_float64() -> None:
    logprobs = random_logprobs(2, 3)
    assert divergence_from_logprobs("fkl", logprobs, logprobs).dtype == torch.float64
    assert divergence_from_logprobs("fkl", logprobs.float(), logprobs.half()).dtype == torch.float32


def test_unknown_names_and_parameters_list_the_valid_ones() -> None:
    logprobs = random_logprobs(2, 3)
    valid = "ab, akl, csd, dld, fkl"
    with pytest.raises(HarnessError, match=f"unknown divergence 'kl'; valid choices: {valid}"):
        divergence_from_logprobs("kl", logprobs, logprobs)
    with pytest.raises(HarnessError, match="unknown parameter 'beta' for divergence 'sfkl'; valid parameters: skew"):
        divergence_from_logprobs("sfkl", logprobs, logprobs, beta=0.5)
    with pytest.raises(HarnessError, match="valid parameters: none"):
        token_divergence("fkl", logprobs, logprobs, skew=0.1)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("jsd", {"beta": 0.0}),
        ("jsd", {"beta": 1.0}),
        ("sfkl", {"skew": 1.0}),
        ("srkl", {"skew": -0.1}),
        ("akl", {"mu": 0}),
    ],
)
def test_out_of_range_parameters_are_rejected(name: str, params: dict[str, float]) -> None:
    logprobs = random_logprobs(2, 3)
    with pytest.raises(HarnessError, match=name):
        divergence_from_logprobs(name, logprobs, logprobs, **params)


def test_registry_describes_every_divergence() -> None:
    for name, spec in DIVERGENCES.items():
        assert spec.name == name and spec.description
    assert DIVERGENCES["ab"].defaults == {"alpha": 0.5, "beta": 0.5}


# --- logit divergences (csd, dld) and the Bridge-Garden / DistiLLM variants -----------------------------------


def test_csd_student_weights_is_half_the_weighted_variance_of_the_logit_gap() -> None:
    torch.manual_seed(7)
    z_s, z_t = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 9, dtype=torch.float64)
    for tau in (1.0, 0.5, 2.0):
        w = torch.softmax(z_s / tau, -1)
        d = z_s - z_t  # raw logits: the temperature only sets the weights, as in the CSD release
        variance = (w * (d - (w * d).sum(-1, keepdim=True)) ** 2).sum(-1)
        value = token_divergence("csd", z_s, z_t, temperature=tau, weights="student")
        assert torch.allclose(value, 0.5 * variance, rtol=1e-12)


@pytest.mark.parametrize("weights", ["student", "teacher", "uniform", "teacher-student", "uniform-student"])
def test_csd_equals_the_pairwise_definition(weights: str) -> None:
    z_s, z_t = [1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.5]
    soft = {
        "student": torch.tensor(z_s, dtype=torch.float64).softmax(-1).tolist(),
        "teacher": torch.tensor(z_t, dtype=torch.float64).softmax(-1).tolist(),
        "uniform": [0.25] * 4,
    }
    first, _, second = weights.partition("-")
    expected = csd_formula(z_s, z_t, soft[first], soft[second or first])
    value = token_divergence(
        "csd", torch.tensor(z_s, dtype=torch.float64), torch.tensor(z_t, dtype=torch.float64), weights=weights
    )
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_csd_is_invariant_to_a_shift_of_either_logit_vector() -> None:
    torch.manual_seed(8)
    z_s, z_t = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    shift_s, shift_t = torch.randn(4, 1, dtype=torch.float64) * 50, torch.randn(4, 1, dtype=torch.float64) * 50
    for weights in ("student", "teacher-student", "uniform-student"):
        base = token_divergence("csd", z_s, z_t, weights=weights)
        shifted = token_divergence("csd", z_s + shift_s, z_t + shift_t, weights=weights)
        assert torch.allclose(base, shifted, rtol=1e-9)


def test_csd_gradient_is_the_papers_linear_time_estimator() -> None:
    torch.manual_seed(9)
    z_t = torch.randn(3, 8, dtype=torch.float64)
    z_s = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(token_divergence("csd", z_s, z_t, temperature=0.7, weights="student").sum(), z_s)
    w, d = torch.softmax(z_s.detach() / 0.7, -1), z_s.detach() - z_t
    assert torch.allclose(grad, w * (d - (w * d).sum(-1, keepdim=True)), rtol=1e-12, atol=1e-15)
    # CSD (T,S): the release's csd_weighting_function gradient, 1/2 p_S (d - E_T d) + 1/2 p_T (d - E_S d)
    (grad,) = torch.autograd.grad(token_divergence("csd", z_s, z_t, weights="teacher-student").sum(), z_s)
    p_s, p_t = torch.softmax(z_s.detach(), -1), torch.softmax(z_t, -1)
    expected = 0.5 * p_t * (d - (p_s * d).sum(-1, keepdim=True)) + 0.5 * p_s * (d - (p_t * d).sum(-1, keepdim=True))
    assert torch.allclose(grad, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("csd", {"weights": "student"}),
        ("csd", {"weights": "uniform-student"}),
        ("dld", {"weights": "student", "normalization": "mean"}),
        ("dld", {"weights": "uniform", "normalization": "std"}),
        ("dld", {"weights": "uniform", "normalization": "none"}),
        ("dld", {"weights": "student", "normalization": "logsoftmax"}),
    ],
    ids=str,
)
def test_logit_divergence_gradcheck_with_respect_to_the_teacher(name: str, params: dict) -> None:
    # Student and uniform weights do not depend on the teacher, so the value is smooth in z_T with its exact gradient.
    torch.manual_seed(10)
    z_s = torch.randn(3, 6, dtype=torch.float64)
    z_t = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: token_divergence(name, z_s, t, **params), (z_t,))


def test_dld_with_uniform_weights_gradcheck_with_respect_to_the_student() -> None:
    z_t = torch.randn(3, 6, dtype=torch.float64)
    z_s = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    for normalization in ("none", "mean", "min", "max", "std", "range", "logsoftmax"):
        assert torch.autograd.gradcheck(
            lambda s, n=normalization: token_divergence("dld", s, z_t, weights="uniform", normalization=n), (z_s,)
        )


def test_dld_normalisations_on_a_hand_case() -> None:
    z_s, z_t = [1.0, 2.0, 4.0], [0.0, 3.0, 3.0]

    def mean_c(z):
        m = sum(z) / 3
        return [x - m for x in z]

    def std_c(z):
        c = mean_c(z)
        sd = math.sqrt(sum(x * x for x in c) / 2)  # Bessel's correction, as torch.std
        return [x / (sd + 1e-9) for x in c]

    def rng(z):
        return [2 * (x - min(z)) / (max(z) - min(z) + 1e-9) - 1 for x in z]

    def lsm(z):
        lse = math.log(sum(math.exp(x) for x in z))
        return [x - lse for x in z]

    norms = {
        "none": lambda z: z,
        "mean": mean_c,
        "min": lambda z: [x - min(z) for x in z],
        "max": lambda z: [x - max(z) for x in z],
        "std": std_c,
        "range": rng,
        "logsoftmax": lsm,
    }
    w_s = torch.tensor(z_s, dtype=torch.float64).softmax(-1).tolist()
    for normalization, n in norms.items():
        gap = [a - b for a, b in zip(n(z_s), n(z_t), strict=True)]
        args = (torch.tensor([z_s], dtype=torch.float64), torch.tensor([z_t], dtype=torch.float64))
        uniform = token_divergence("dld", *args, weights="uniform", normalization=normalization).item()
        assert uniform == pytest.approx(0.25 * sum(g * g for g in gap) / 3, rel=1e-12), normalization
        student = token_divergence("dld", *args, weights="student", normalization=normalization).item()
        assert student == pytest.approx(0.25 * sum(w * g * g for w, g in zip(w_s, gap, strict=True)), rel=1e-12)


def test_jsd_skew_is_jsd_with_beta_one_minus_lambda() -> None:
    torch.manual_seed(11)
    teacher, student = random_logprobs(5, 8), random_logprobs(5, 8)
    assert torch.allclose(
        divergence_from_logprobs("jsd-skew", student, teacher, lam=0.1),
        divergence_from_logprobs("jsd", student, teacher, beta=0.9),
        rtol=1e-12,
    )
    logits = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z: divergence_from_logprobs("jsd-skew", torch.log_softmax(z, -1), teacher[:3]), (logits,)
    )


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("csd", {"weights": "student-student-teacher"}, "csd weights"),
        ("csd", {"weights": 0.5}, "must be a string"),
        ("dld", {"normalization": "zscore"}, "dld normalization 'zscore' unknown"),
        ("dld", {"weights": "both"}, "dld weights 'both' unknown"),
        ("jsd-skew", {"lam": 1.0}, "lam must be in"),
        ("csd", {"beta": 0.5}, "unknown parameter 'beta' for divergence 'csd'"),
    ],
)
def test_bad_logit_divergence_parameters_are_rejected(name: str, params: dict, message: str) -> None:
    logits = torch.randn(2, 3)
    with pytest.raises(HarnessError, match=message):
        token_divergence(name, logits, logits, **params)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_forward_kl_from_logits_equals_the_generic_path(temperature: float) -> None:
    """token_divergence's fkl (its own backward) against divergence_from_logprobs of the two log-softmaxes."""
    torch.manual_seed(7)
    student = (torch.randn(5, 3, 17, dtype=torch.float64) * 3).requires_grad_(True)
    teacher = torch.randn(5, 3, 17, dtype=torch.float64) * 3
    teacher[0, 0, :4] = -torch.inf  # masked entries: probability 0
    weights = torch.randn(5, 3, dtype=torch.float64)
    fast = token_divergence("fkl", student, teacher, temperature=temperature)
    generic = divergence_from_logprobs(
        "fkl", torch.log_softmax(student / temperature, -1), torch.log_softmax(teacher / temperature, -1)
    )
    assert torch.allclose(fast, generic, rtol=1e-12, atol=1e-14)
    (got,) = torch.autograd.grad((fast * weights).sum(), student)
    (expected,) = torch.autograd.grad((generic * weights).sum(), student)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda s: token_divergence("fkl", s, teacher, temperature=temperature), (student,))
