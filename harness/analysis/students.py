"""Students for analysis: any function from token prefixes to next-token distributions.

A `StudentFn` reads a batch of texts `tokens [n, t]` and returns the next-token probabilities after every prefix,
`[n, t + 1, V]` (prefix lengths 0..t), as a causal language model does in one forward pass.

The dynamic programs over states (`kappa.exact_kappa`, `exposure.exact_exposure`) need a state-conditioned student:
a table `[S, V]` of p_S(.|s), exactly a student whose output depends on the prefix only through the state
(`table_student` turns it into a `StudentFn`). A neural student reads the whole prefix: use the prefix-level
functions (`kappa.prefix_kappa`, `exposure.mc_exposure`), which accept any `StudentFn`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.analysis.process import FiniteStateTeacher, Policy

StudentFn = Callable[[np.ndarray], np.ndarray]


def kl_at_states(process: FiniteStateTeacher, states: np.ndarray, student_probs: np.ndarray) -> np.ndarray:
    """KL(p_T(.|s) || p_S) for states [...] and student probabilities [..., V] (infinite where p_S misses a teacher
    token; 0 log 0 = 0)."""
    probs = process.support_probs[states]
    student_on_support = np.take_along_axis(student_probs, process.support[states], axis=-1)
    with np.errstate(divide="ignore"):
        log_ratio = process.support_log_probs[states] - np.log(np.where(probs > 0, student_on_support, 1.0))
    return (probs * log_ratio).sum(axis=-1)


def table_student(process: FiniteStateTeacher, table: np.ndarray) -> StudentFn:
    """The student p_S(.|prefix) = table[state(prefix)]."""

    def student(tokens: np.ndarray) -> np.ndarray:
        return table[process.states_along(tokens)]

    return student


def as_policy(student: StudentFn) -> Policy:
    """The student as a sampling policy for `FiniteStateTeacher.rollout`."""
    return lambda tokens, states: student(tokens)[:, -1]


def position_kl(process: FiniteStateTeacher, student: StudentFn, tokens: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """[n, t]: KL(p_T(.|s_i) || p_S(.|tokens[:i])) at each position i, 0 once the text has ended (in chunks)."""
    parts = []
    for start in range(0, len(tokens), chunk):
        batch = tokens[start : start + chunk]
        states = process.states_along(batch)[:, :-1]
        kl = kl_at_states(process, states, student(batch)[:, :-1])
        parts.append(np.where(states != process.terminal, kl, 0.0))
    return np.concatenate(parts)
