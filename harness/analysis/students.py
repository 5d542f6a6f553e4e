"""Students for analysis: any function from token prefixes to next-token distributions.

A `StudentFn` reads a batch of texts `tokens [n, t]` and returns the next-token probabilities after every prefix,
`[n, t + 1, V]` (prefix lengths 0..t), as a causal language model does in one forward pass.

The exact dynamic programs (`kappa`, `exposure`) run over the process's states, so they need a state-conditioned
student: a table `[S, V]` of p_S(.|s). A table is exactly a student whose output depends on the prefix only through
the state. A neural student reads the whole prefix; `canonical_table` evaluates it on one canonical prefix per state
and `state_consistency_gap` measures how far that surrogate is from the student on the prefixes it actually meets.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.analysis.process import FiniteStateTeacher, Policy, Rollout

StudentFn = Callable[[np.ndarray], np.ndarray]


def kl_to_teacher(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """KL(p_T || p_S) over the last axis, with 0 log 0 = 0 (infinite where the student gives 0 to a teacher token)."""
    support = teacher > 0
    with np.errstate(divide="ignore"):
        log_ratio = np.log(np.where(support, teacher, 1.0)) - np.log(np.where(support, student, 1.0))
    return np.where(support, teacher * log_ratio, 0.0).sum(axis=-1)


def table_student(process: FiniteStateTeacher, table: np.ndarray) -> StudentFn:
    """The student p_S(.|prefix) = table[state(prefix)]."""

    def student(tokens: np.ndarray) -> np.ndarray:
        return table[process.states_along(tokens)]

    return student


def as_policy(student: StudentFn) -> Policy:
    """The student as a sampling policy for `FiniteStateTeacher.rollout`."""
    return lambda tokens, states: student(tokens)[:, -1]


def canonical_table(process: FiniteStateTeacher, student: StudentFn) -> np.ndarray:
    """[S, V]: the student's distribution after each state's canonical prefix (batched by prefix length)."""
    table = np.zeros_like(process.teacher)
    by_length: dict[int, list[int]] = {}
    for state, prefix in enumerate(process.canonical_prefixes):
        by_length.setdefault(len(prefix), []).append(state)
    for length, states in by_length.items():
        tokens = np.array([process.canonical_prefixes[s] for s in states], dtype=np.int64).reshape(len(states), length)
        table[states] = student(tokens)[:, -1]
    return table


def position_kl(process: FiniteStateTeacher, student: StudentFn, rollout: Rollout) -> np.ndarray:
    """[n, horizon]: KL(p_T(.|s_t) || p_S(.|prefix_t)) at each written position, 0 after the end."""
    teacher = process.teacher[rollout.states[:, :-1]]
    student_probs = student(rollout.tokens)[:, :-1]
    return np.where(rollout.live, kl_to_teacher(teacher, student_probs), 0.0)


def state_consistency_gap(process: FiniteStateTeacher, student: StudentFn, rollout: Rollout) -> float:
    """Mean KL(student on the real prefix || student on its state's canonical prefix) over written positions.

    Zero exactly when the student depends on the prefix only through the state on these texts; then the exact
    state-level kappa and exposure of `canonical_table(student)` are the student's own.
    """
    surrogate = canonical_table(process, student)[rollout.states[:, :-1]]
    gaps = kl_to_teacher(student(rollout.tokens)[:, :-1], surrogate)
    return float(gaps[rollout.live].mean())
