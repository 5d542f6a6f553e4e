"""Exact per-token leave-one-out risk (kappa) by dynamic programming over the process's states, and its Monte Carlo
check.

For a state-conditioned student p_S (a table, see `students`), with cost c(s) = KL(p_T(.|s) || p_S(.|s)) at every
non-terminal state:

- V_H(s)    = expected sum of c over the first H states of the teacher's continuation from s (s included):
              V_0 = 0, V_h(s) = c(s) + sum_a p_T(a|s) V_{h-1}(step(s, a)).
- Q_H(s, a) = V_H(step(s, a)): the expected future loss after writing a at s, then following the teacher.
- kappa(a|s) = Q(s, a) - sum_a' p_T(a'|s) Q(s, a'), computed as sum_a' p_T(a'|s) (Q(s, a) - Q(s, a')), so it is
  exactly 0 wherever a leads to the same next state as every teacher token. Defined for every token, including
  those the teacher never writes.
- risk(s)   = sum_a p_T(a|s) |kappa(a|s)|: the teacher-weighted mean absolute spread of Q over the teacher's own
  choices; 0 where the teacher has one choice or all its choices lead to the same state (gardens).
- student_kappa(s) = sum_a p_S(a|s) kappa(a|s): how much the expected future loss grows when the student instead of
  the teacher picks the token at s. Summed over the student's own state distribution it equals the exposure bias
  (performance-difference identity; see `exposure.exposure_by_state`).

The recursion runs over all states at once for h = 1..H, which is the memoised DP over (state, steps to go); the
state graph is a DAG of depth `process.horizon`, so H = horizon (the default) sums the whole continuation. All of
this is exact for the table student. For a neural student it is exact for its canonical-prefix table
(`students.canonical_table`), which equals the student itself where `students.state_consistency_gap` is zero;
`mc_q` estimates Q for any prefix-reading student by rollouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.analysis.process import FiniteStateTeacher
from harness.analysis.students import StudentFn, kl_to_teacher, position_kl


@dataclass(frozen=True)
class KappaTable:
    cost: np.ndarray  # [S] KL(p_T(.|s) || p_S(.|s)); 0 at the terminal state
    value: np.ndarray  # [S] V_H(s)
    q: np.ndarray  # [S, V] Q_H(s, a)
    kappa: np.ndarray  # [S, V] kappa(a|s)
    risk: np.ndarray  # [S] sum_a p_T(a|s) |kappa(a|s)|
    student_kappa: np.ndarray  # [S] sum_a p_S(a|s) kappa(a|s)


def state_costs(process: FiniteStateTeacher, student_table: np.ndarray) -> np.ndarray:
    """[S] KL(p_T(.|s) || p_S(.|s)), 0 at the terminal state."""
    cost = kl_to_teacher(process.teacher, student_table)
    cost[process.terminal] = 0.0
    return cost


def exact_kappa(process: FiniteStateTeacher, student_table: np.ndarray, horizon: int | None = None) -> KappaTable:
    """Q, kappa, risk and student_kappa for every state and token (see the module docstring)."""
    horizon = process.horizon if horizon is None else horizon
    cost = state_costs(process, student_table)
    value = np.zeros(process.num_states)
    for _ in range(horizon):
        value = cost + (process.teacher * value[process.next_state]).sum(axis=1)
    q = value[process.next_state]
    differences = q[:, :, None] - q[:, None, :]  # [S, a, a']
    kappa = (differences * process.teacher[:, None, :]).sum(axis=2)
    risk = (process.teacher * np.abs(kappa)).sum(axis=1)
    student_kappa = (student_table * kappa).sum(axis=1)
    return KappaTable(cost=cost, value=value, q=q, kappa=kappa, risk=risk, student_kappa=student_kappa)


def mc_q(
    process: FiniteStateTeacher,
    student: StudentFn,
    prefix: Sequence[int],
    token: int,
    n: int,
    seed: int,
    horizon: int | None = None,
) -> tuple[float, float]:
    """Monte Carlo Q(prefix, token): mean and standard error over `n` teacher continuations of prefix + token.

    Each rollout's loss is exact (the sum of KL to the teacher over at most `horizon` positions); only the
    continuation is sampled.
    """
    horizon = process.horizon if horizon is None else horizon
    start = len(prefix) + 1
    rollout = process.rollout(process.teacher_policy, n, np.random.default_rng(seed), prefix=(*prefix, token))
    losses = position_kl(process, student, rollout)[:, start : start + horizon].sum(axis=1)
    return float(losses.mean()), float(losses.std(ddof=1) / np.sqrt(n))
