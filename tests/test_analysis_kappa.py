"""Exact kappa: zero where tokens share the next state, known values, and agreement with Monte Carlo rollouts."""

import numpy as np
import pytest

from harness.analysis.exposure import occupancy
from harness.analysis.kappa import exact_kappa, mc_q, prefix_kappa
from harness.analysis.process import ROLES, TOKEN_ID, FiniteStateTeacher
from harness.analysis.students import kl_at_states, table_student


@pytest.fixture(scope="module")
def process() -> FiniteStateTeacher:
    return FiniteStateTeacher()


@pytest.fixture(scope="module")
def noisy_table(process) -> np.ndarray:
    """A state-conditioned student: the teacher mixed with random noise at every state."""
    noise = np.random.default_rng(0).dirichlet(np.ones(len(process.vocab)), size=process.num_states)
    return 0.6 * process.teacher + 0.4 * noise


def history_student(process, noisy_table):
    """A student that reads more than the state: its noise depends on the sum of the prefix's token ids mod 5."""
    noise = np.random.default_rng(1).dirichlet(np.ones(len(process.vocab)), size=5)

    def student(tokens: np.ndarray) -> np.ndarray:
        sums = np.concatenate([np.zeros((len(tokens), 1), dtype=np.int64), np.cumsum(tokens, axis=1)], axis=1)
        return 0.5 * noisy_table[process.states_along(tokens)] + 0.5 * noise[sums % 5]

    return student


def test_kappa_is_exactly_zero_where_tokens_share_the_next_state(process, noisy_table):
    table = exact_kappa(process, noisy_table)
    checked = 0
    for state in range(process.num_states):
        teacher_next = set(process.next_state[state, process.teacher[state] > 0].tolist())
        if len(teacher_next) != 1:
            continue
        assert table.risk[state] == 0.0
        same = process.next_state[state] == teacher_next.pop()
        assert (table.kappa[state, same] == 0.0).all()
        checked += 1
    garden_g = [s for s in range(process.num_states) if process.states[s].slot in (6, 14)]
    assert checked > len(garden_g) > 0
    assert all(table.risk[s] == 0.0 for s in garden_g)  # every connector leads to the same state


def test_bridge_choices_carry_risk_for_a_noisy_student(process, noisy_table):
    table = exact_kappa(process, noisy_table)
    choices = process.role == ROLES.index("bridge_choice")
    assert (table.risk[choices] > 0).all()


def test_student_equal_to_teacher_has_no_loss_and_no_risk(process):
    table = exact_kappa(process, process.teacher)
    assert np.abs(table.q).max() < 1e-12 and np.abs(table.kappa).max() < 1e-12


def test_kappa_has_teacher_mean_zero(process, noisy_table):
    table = exact_kappa(process, noisy_table)
    np.testing.assert_allclose((process.teacher * table.kappa).sum(axis=1), 0.0, atol=1e-10)


def test_known_value_one_wrong_state(process):
    """Student = teacher except at one C-slot state: V(s) = its cost x P(teacher reaches it from s)."""
    target = next(s for s, st in enumerate(process.states) if st.slot == 17 and st.value == 5)
    student = process.teacher.copy()
    student[target] = 0.5 * student[target] + 0.5 / len(process.vocab)
    table = exact_kappa(process, student)
    cost = table.cost[target]
    assert cost > 0 and np.count_nonzero(table.cost) == 1
    assert table.value[process.initial] == pytest.approx(cost * occupancy(process, process.teacher)[target])
    # At a B choice with running value 3, only B = 2 leads to C = 5: Q is cost there and 0 elsewhere.
    b_state = next(s for s, st in enumerate(process.states) if st.slot == 11 and st.value == 3)
    assert table.q[b_state, TOKEN_ID["2"]] == pytest.approx(cost)
    assert table.q[b_state, TOKEN_ID["4"]] == 0.0
    assert table.kappa[b_state, TOKEN_ID["2"]] == pytest.approx(cost * (1 - 1 / 5))


def test_horizon_truncates_the_sum(process, noisy_table):
    assert np.array_equal(exact_kappa(process, noisy_table, horizon=1).value, exact_kappa(process, noisy_table).cost)
    full, longer = exact_kappa(process, noisy_table), exact_kappa(process, noisy_table, horizon=process.horizon + 5)
    np.testing.assert_allclose(full.q, longer.q, atol=1e-12)


@pytest.mark.parametrize("horizon", [None, 4])
def test_dp_matches_monte_carlo(process, noisy_table, horizon):
    table = exact_kappa(process, noisy_table, horizon=horizon)
    student = table_student(process, noisy_table)
    text = process.sample(1, seed=3)
    cases = [((), TOKEN_ID["<eos>"])]
    for slot in (0, 3, 5, 11, 15):  # fixed, bridge choice, optional word, bridge choice, bridge target
        t = next(t for t, s in enumerate(text.states[0]) if process.states[s].slot == slot)
        state, prefix = text.states[0, t], tuple(text.tokens[0, :t])
        teacher_tokens = np.flatnonzero(process.teacher[state] > 0)
        teacher_next = process.next_state[state, teacher_tokens]
        elsewhere = [a for a in range(1, len(process.vocab)) if process.next_state[state, a] not in teacher_next]
        cases += [(prefix, int(teacher_tokens[-1])), (prefix, elsewhere[-1] if elsewhere else 1)]
    errors = []
    for i, (prefix, token) in enumerate(cases):
        state = process.states_along(np.array([prefix], dtype=np.int64).reshape(1, -1))[0, -1]
        mean, error = mc_q(process, student, prefix, token, n=1500, seed=i, horizon=horizon)
        assert abs(mean - table.q[state, token]) < 4 * error + 1e-12, (prefix, token)  # + rounding: some are certain
        errors.append(error)
    assert sum(e > 0 for e in errors) >= 6  # continuations from the early positions are random


@pytest.mark.parametrize("horizon", [None, 5])
def test_prefix_kappa_equals_the_state_dp_for_a_table_student(process, noisy_table, horizon):
    table = exact_kappa(process, noisy_table, horizon=horizon)
    student = table_student(process, noisy_table)
    text = process.sample(1, seed=7).tokens[0]
    prefixes = [text[:t] for t in (1, 3, 5, 11, 16)] + [process.encode("let x = 8 ; now")]
    for prefix in prefixes:
        state = process.states_along(np.array([prefix], dtype=np.int64).reshape(1, -1))[0, -1]
        at_prefix = prefix_kappa(process, student, prefix, horizon=horizon)
        np.testing.assert_allclose(at_prefix.q, table.q[state], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(at_prefix.kappa, table.kappa[state], rtol=1e-9, atol=1e-12)
        assert at_prefix.risk == pytest.approx(table.risk[state], abs=1e-12)
        assert at_prefix.student_kappa == pytest.approx(table.student_kappa[state], abs=1e-12)


def test_prefix_kappa_matches_monte_carlo_for_a_student_that_reads_the_history(process, noisy_table):
    student = history_student(process, noisy_table)
    prefix = process.encode("let y = 2 ;")
    exact = prefix_kappa(process, student, prefix)
    for i, token in enumerate([process.vocab.index("now"), process.vocab.index("so"), process.vocab.index("7")]):
        mean, error = mc_q(process, student, prefix, token, n=1500, seed=20 + i)
        assert error > 0 and abs(mean - exact.q[token]) < 4 * error
    state = process.states_along(np.array([prefix]))[0, -1]
    assert not np.allclose(exact.q, exact_kappa(process, noisy_table).q[state])  # the history matters


def test_kl_at_states_matches_the_formula(process, noisy_table):
    states = np.arange(process.num_states)
    p, q = process.teacher, noisy_table
    dense = np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0).sum(axis=1)
    np.testing.assert_allclose(kl_at_states(process, states, q), dense, rtol=1e-12, atol=1e-15)
    assert (kl_at_states(process, states, process.teacher) == 0).all()
    missing = process.teacher.copy()
    missing[process.initial] = np.roll(missing[process.initial], 1)
    assert np.isinf(kl_at_states(process, states, missing)[process.initial])
