"""A teacher-only estimate of per-token bridge risk, for completions of any real model.

risk = margin x (1 - H / log V), with p = softmax(teacher_logits) over the last axis (size V >= 2):
- margin = p_top1 - p_top2, in [0, 1]: how clearly the teacher prefers one token;
- H = -sum p log p, normalised by its maximum log V: how spread the teacher is.

Both factors are in [0, 1], so the risk is too: near 1 where the teacher is sure of one token (a bridge: the exact
token matters), 0 where its top two tokens tie or it is flat (a garden: many tokens are fine). Logits of -inf
(a top-k truncated teacher) are allowed. On the finite-state teacher this is 1 at every determined token and 0.1 x
(1 - H / log V) at the connectors; `kappa` gives the exact risk there to compare against.
"""

from __future__ import annotations

import math

import torch


def estimated_risk(teacher_logits: torch.Tensor) -> torch.Tensor:
    """[..., V] teacher logits -> [...] estimated bridge risk in [0, 1] (formula in the module docstring)."""
    probs = teacher_logits.float().softmax(dim=-1)
    top2 = probs.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    entropy = torch.special.entr(probs).sum(dim=-1)
    certainty = 1 - entropy / math.log(probs.shape[-1])
    return (margin * certainty).clamp(0.0, 1.0)
