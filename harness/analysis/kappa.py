"""Exact per-token leave-one-out risk (kappa): a DP over the process's states, its prefix-level form for students that
read the whole prefix, and a Monte Carlo check.

With cost c = KL(p_T(.|s) || p_S(.|prefix)) at every non-terminal position:

- V_H(s)    = expected sum of c over the first H positions of the teacher's continuation from s (s included):
              V_0 = 0, V_h(s) = c(s) + sum_a p_T(a|s) V_{h-1}(step(s, a)).
- Q_H(s, a) = V_H(step(s, a)): the expected future loss after writing a at s, then following the teacher.
- kappa(a|s) = Q(s, a) - sum_a' p_T(a'|s) Q(s, a'), computed as sum_a' p_T(a'|s) (Q(s, a) - Q(s, a')), so it is
  exactly 0 wherever a leads to the same next state as every teacher token. Defined for every token, including
  those the teacher never writes.
- risk(s)   = sum_a p_T(a|s) |kappa(a|s)|: the teacher-weighted mean absolute spread of Q over the teacher's own
  choices; 0 where the teacher has one choice or all its choices lead to the same state (gardens).
- student_kappa(s) = sum_a p_S(a|s) kappa(a|s): how much the expected future loss grows when the student instead of
  the teacher picks the token at s. Summed over the student's own texts it is the exposure bias
  (performance-difference identity; see `exposure.exposure_by_state`).

What is exact where:
- `exact_kappa` takes a state-conditioned student (a table [S, V]; see `students`) and runs the recursion over all
  states at once for h = 1..H: the memoised DP over (state, steps to go). The state graph is a DAG of depth
  `process.horizon`, so H = horizon (the default) sums the whole continuation.
- A neural student reads the prefix, and its errors depend on how a state was reached (an unseen number earlier in
  the text), which a table cannot express. `prefix_kappa` is exact for such a student at one prefix: the teacher's
  continuations from each next state are enumerated (finite, memoised per state: the teacher part of the DP) and the
  student reads the actual prefix + token + continuation. For a table student the two agree exactly.
- `mc_q` estimates Q by sampled teacher continuations, with a standard error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.analysis.process import FiniteStateTeacher
from harness.analysis.students import StudentFn, kl_at_states, position_kl


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
    cost = kl_at_states(process, np.arange(process.num_states), student_table)
    cost[process.terminal] = 0.0
    return cost


def kappa_terms(q: np.ndarray, teacher: np.ndarray, student: np.ndarray) -> tuple[np.ndarray, ...]:
    """kappa [..., V], risk [...] and student_kappa [...] from Q [..., V] and the two distributions [..., V]."""
    kappa = ((q[..., :, None] - q[..., None, :]) * teacher[..., None, :]).sum(axis=-1)
    return kappa, (teacher * np.abs(kappa)).sum(axis=-1), (student * kappa).sum(axis=-1)


def exact_kappa(process: FiniteStateTeacher, student_table: np.ndarray, horizon: int | None = None) -> KappaTable:
    """Q, kappa, risk and student_kappa for every state and token of a state-conditioned student."""
    horizon = process.horizon if horizon is None else horizon
    cost = state_costs(process, student_table)
    value = np.zeros(process.num_states)
    for _ in range(horizon):
        value = cost + (process.teacher * value[process.next_state]).sum(axis=1)
    q = value[process.next_state]
    kappa, risk, student_kappa = kappa_terms(q, process.teacher, student_table)
    return KappaTable(cost=cost, value=value, q=q, kappa=kappa, risk=risk, student_kappa=student_kappa)


@dataclass(frozen=True)
class PrefixKappa:
    teacher: np.ndarray  # [V] p_T(.|state(prefix))
    student: np.ndarray  # [V] p_S(.|prefix)
    q: np.ndarray  # [V] Q_H(prefix, a)
    kappa: np.ndarray  # [V]
    risk: float
    student_kappa: float


def prefix_kappa(
    process: FiniteStateTeacher, student: StudentFn, prefix: Sequence[int], horizon: int | None = None
) -> PrefixKappa:
    """Exact Q, kappa, risk and student_kappa at one prefix, for any prefix-reading student."""
    horizon = process.horizon if horizon is None else horizon
    prefix = np.asarray(prefix, dtype=np.int64)
    start = len(prefix) + 1
    width = max(min(horizon, process.horizon - start), 0)  # after t tokens at most horizon - t remain
    state = process.states_along(prefix[None])[0, -1]
    texts, weights, groups = [], [], []
    for token, nxt in enumerate(process.next_state[state]):
        continuation, probs = process.continuations(int(nxt), width)
        head = np.broadcast_to(np.append(prefix, token), (len(continuation), start))
        texts.append(np.concatenate([head, continuation], axis=1))
        weights.append(probs)
        groups.append(np.full(len(probs), token))
    losses = position_kl(process, student, np.concatenate(texts))[:, start : start + horizon].sum(axis=1)
    q = np.bincount(np.concatenate(groups), weights=np.concatenate(weights) * losses, minlength=len(process.vocab))
    teacher, student_probs = process.teacher[state], student(prefix[None])[0, -1]
    kappa, risk, student_kappa = kappa_terms(q, teacher, student_probs)
    return PrefixKappa(teacher, student_probs, q, kappa, float(risk), float(student_kappa))


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
    losses = position_kl(process, student, rollout.tokens)[:, start : start + horizon].sum(axis=1)
    return float(losses.mean()), float(losses.std(ddof=1) / np.sqrt(n))
