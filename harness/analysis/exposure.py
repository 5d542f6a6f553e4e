"""Exposure bias: expected KL to the teacher summed over the student's own texts minus over the teacher's texts.

bias = E_{text ~ student}[sum_t KL(p_T(.|s_t) || p_S(.|prefix_t))] - E_{text ~ teacher}[same sum].

`exact_exposure` sums over the finite process exactly (forward state occupancies) for a state-conditioned
student (a table). `mc_exposure` works for any prefix-reading student: the teacher's texts are finite and summed
exactly; the student's own texts (any token has positive probability, so there are |V|^horizon) are sampled, each
text's loss is exact, and the result carries the standard error of that mean. Both are totals per text (not per
token): a student that ends texts early stops accruing loss, which is part of what it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.analysis.kappa import KappaTable, state_costs
from harness.analysis.process import FiniteStateTeacher
from harness.analysis.students import StudentFn, as_policy, position_kl


@dataclass(frozen=True)
class Exposure:
    student_rollout_kl: float
    teacher_forced_kl: float
    bias: float
    standard_error: float  # 0.0 when exact
    method: str  # "exact" or "monte carlo, n=<texts per side>"


def occupancy(process: FiniteStateTeacher, policy_table: np.ndarray) -> np.ndarray:
    """[S] expected number of visits to each non-terminal state in a text written by `policy_table` [S, V]."""
    visits = np.zeros(process.num_states)
    current = np.zeros(process.num_states)
    current[process.initial] = 1.0
    for _ in range(process.horizon):
        current[process.terminal] = 0.0
        visits += current
        flow = current[:, None] * policy_table
        current = np.bincount(process.next_state.ravel(), weights=flow.ravel(), minlength=process.num_states)
    return visits


def exact_exposure(process: FiniteStateTeacher, student_table: np.ndarray) -> Exposure:
    """Exposure bias of a state-conditioned student, summed exactly over the process."""
    cost = state_costs(process, student_table)
    on_student = float(occupancy(process, student_table) @ cost)
    on_teacher = float(occupancy(process, process.teacher) @ cost)
    return Exposure(on_student, on_teacher, on_student - on_teacher, 0.0, "exact")


def exposure_by_state(process: FiniteStateTeacher, student_table: np.ndarray, kappa: KappaTable) -> np.ndarray:
    """[S] each state's share of the exposure bias: student occupancy x student_kappa (they sum to the bias).

    Performance-difference identity: for the teacher's value V and Q = V(step(s, a)), the student's expected
    total cost minus the teacher's is E_{s ~ student}[sum_a (p_S(a|s) - p_T(a|s)) Q(s, a)].
    """
    return occupancy(process, student_table) * kappa.student_kappa


def teacher_forced_kl(process: FiniteStateTeacher, student: StudentFn) -> float:
    """Exact E_{text ~ teacher}[sum_t KL(p_T || p_S)] for any student: the teacher's texts are enumerated."""
    texts, probs = process.continuations(process.initial, process.horizon)
    return float(probs @ position_kl(process, student, texts).sum(axis=1))


def mc_exposure(process: FiniteStateTeacher, student: StudentFn, n: int, seed: int) -> Exposure:
    """Exposure bias of any student: its own texts sampled (`n`, with the standard error), the teacher's exact."""
    own_texts = process.rollout(as_policy(student), n, np.random.default_rng(seed)).tokens
    own = position_kl(process, student, own_texts).sum(axis=1)
    forced = teacher_forced_kl(process, student)
    return Exposure(
        float(own.mean()),
        forced,
        float(own.mean()) - forced,
        float(own.std(ddof=1) / np.sqrt(n)),
        f"student texts: monte carlo, n={n}; teacher texts: exact",
    )
