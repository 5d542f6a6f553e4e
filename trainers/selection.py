"""Student-entropy position selection (SE-KD): distil only the rows where the student is most uncertain.

SE-KD (almogtavor/SE-KD3x, "Rethinking Selective Knowledge Distillation") keeps the top 20% of positions by the
student's entropy and computes the distillation loss on those only. `select_rows` applies this to any per-row soft
term: the kept rows are the ceil(fraction * n) of highest student entropy among the n rows it is given (one chunk
of rows: the whole micro-batch when it fits in one chunk, `TrainConfig.chunk_size`; SE-KD ranks within each
example), the others get 0, and the kept ones are scaled by n / kept so the loop's mean over all rows is the mean
over the kept rows (SE-KD averages over the selected positions). The selection itself carries no gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def entropy_rows(logprobs: Tensor) -> Tensor:
    """Per-row entropy of normalised log-probs (0 log 0 = 0)."""
    return -(logprobs.exp() * logprobs).nan_to_num(0.0).sum(-1)


def select_rows(logits: Tensor, values: Tensor, fraction: float) -> Tensor:
    """`values` [n] kept on the ceil(fraction * n) rows of highest student entropy (from `logits` [n, V]), zero
    elsewhere, rescaled by n / kept; unchanged when fraction is 1."""
    n = values.shape[0]
    if fraction >= 1.0 or n == 0:
        return values
    keep = max(1, math.ceil(fraction * n))
    with torch.no_grad():
        entropy = entropy_rows(torch.log_softmax(logits.float(), dim=-1))
        mask = torch.zeros(n, dtype=values.dtype, device=values.device)
        mask[entropy.topk(keep).indices] = n / keep
    return values * mask
