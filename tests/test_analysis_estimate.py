"""The teacher-only risk estimate: peaked = bridge (near 1), flat or tied = garden (0), always in [0, 1]."""

import math

import pytest
import torch

from harness.analysis.process import ROLES, FiniteStateTeacher
from trainers.risk_estimate import estimated_risk


def test_peaked_is_a_bridge_and_flat_is_a_garden():
    peaked = torch.tensor([12.0, 0.0, 0.0, 0.0, 0.0])
    assert estimated_risk(peaked).item() > 0.99
    assert estimated_risk(torch.zeros(5)).item() == 0.0
    assert estimated_risk(torch.tensor([3.0, 3.0, 3.0, 3.0, -30.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_known_value():
    probs = torch.tensor([0.7, 0.2, 0.1])
    entropy = -(probs * probs.log()).sum().item()
    expected = (0.7 - 0.2) * (1 - entropy / math.log(3))
    assert estimated_risk(probs.log()).item() == pytest.approx(expected, rel=1e-5)


def test_bounds_shape_and_shift_invariance():
    logits = torch.randn(4, 7, 50) * 5
    risk = estimated_risk(logits)
    assert risk.shape == (4, 7)
    assert (risk >= 0).all() and (risk <= 1).all()
    torch.testing.assert_close(estimated_risk(logits + 3.0), risk)


def test_sharper_teacher_means_higher_risk():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0])
    risks = [estimated_risk(logits / t).item() for t in (4.0, 2.0, 1.0, 0.5, 0.25)]
    assert risks == sorted(risks) and risks[0] < risks[-1]


def test_top_k_truncated_logits():
    logits = torch.tensor([5.0, 1.0, -math.inf, -math.inf])
    risk = estimated_risk(logits)
    assert torch.isfinite(risk) and 0 < risk.item() < 1


def test_on_the_finite_state_teacher_targets_are_bridges_and_connectors_gardens():
    process = FiniteStateTeacher()
    risk = estimated_risk(torch.from_numpy(process.teacher).log()).numpy()
    assert (risk[process.role == ROLES.index("bridge_target")] == 1.0).all()
    assert (risk[process.role == ROLES.index("garden")] <= 0.1).all()
