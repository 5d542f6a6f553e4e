"""Exposure bias: exact occupancy sums, the kappa decomposition, Monte Carlo agreement, known values."""

import numpy as np
import pytest

from harness.analysis.exposure import exact_exposure, exposure_by_state, mc_exposure, occupancy
from harness.analysis.kappa import exact_kappa
from harness.analysis.process import A_CHOICES, P_NOW, SLOTS, TOKEN_ID, FiniteStateTeacher
from harness.analysis.students import table_student


@pytest.fixture(scope="module")
def process() -> FiniteStateTeacher:
    return FiniteStateTeacher()


@pytest.fixture(scope="module")
def noisy_table(process) -> np.ndarray:
    noise = np.random.default_rng(1).dirichlet(np.ones(len(process.vocab)), size=process.num_states)
    return 0.7 * process.teacher + 0.3 * noise


def test_zero_for_a_student_equal_to_the_teacher(process):
    assert exact_exposure(process, process.teacher).bias == 0.0
    sampled = mc_exposure(process, table_student(process, process.teacher), n=200, seed=0)
    assert sampled.bias == 0.0 and sampled.student_rollout_kl == 0.0


def test_teacher_occupancy_counts_expected_length(process):
    visits = occupancy(process, process.teacher)
    assert visits.sum() == pytest.approx(len(SLOTS) - 2 * (1 - P_NOW))  # each optional `now` left out
    assert visits[process.initial] == 1.0
    after_a = [st.value for st, v in zip(process.states, visits, strict=True) if st.slot == 4 and v > 0]
    assert sorted(set(after_a)) == list(A_CHOICES)
    for a in A_CHOICES:
        mass = sum(v for st, v in zip(process.states, visits, strict=True) if st.slot == 4 and st.value == a)
        assert mass == pytest.approx(1 / len(A_CHOICES))


def test_known_value_early_stop(process):
    """Student stops at once with probability eps and is wrong only at C: bias = -eps x the cost at C."""
    eps = 0.1
    student = process.teacher.copy()
    student[process.initial] = (1 - eps) * process.teacher[process.initial]
    student[process.initial, TOKEN_ID["<eos>"]] = eps
    c_slot = [s for s, st in enumerate(process.states) if st.slot == SLOTS.index(("C", "bridge_target"))]
    numbers = [TOKEN_ID[str(n)] for n in range(10)]
    student[c_slot] *= 0.8
    student[np.ix_(c_slot, numbers)] += 0.02
    c_cost = -np.log(0.82)
    result = exact_exposure(process, student)
    assert result.bias == pytest.approx(-eps * c_cost)
    assert result.teacher_forced_kl == pytest.approx(-np.log(1 - eps) + c_cost)


def test_kappa_decomposes_exposure_bias(process, noisy_table):
    shares = exposure_by_state(process, noisy_table, exact_kappa(process, noisy_table))
    assert shares.sum() == pytest.approx(exact_exposure(process, noisy_table).bias, abs=1e-10)


def test_monte_carlo_matches_exact(process, noisy_table):
    exact = exact_exposure(process, noisy_table)
    sampled = mc_exposure(process, table_student(process, noisy_table), n=3000, seed=5)
    assert sampled.standard_error > 0
    assert abs(sampled.bias - exact.bias) < 4 * sampled.standard_error
    assert "n=3000" in sampled.method and exact.method == "exact"
    assert sampled.teacher_forced_kl == pytest.approx(exact.teacher_forced_kl, rel=1e-12)
