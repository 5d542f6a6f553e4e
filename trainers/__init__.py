"""Distillation objectives and the training loop, on top of exact per-token divergences.

Public API: `token_divergence` / `divergence_from_logprobs` (every divergence, per position), top-k soft labels
(`topk_logprobs`, `topk_divergence`), the method registry (`load_method`, `METHODS`, `register_method`), the
Bridge-Garden release's losses (`release_loss`), the chunked loss and the training loop (`train`, `TrainConfig`).

Names are imported on first use (PEP 562), so importing a light submodule does not pull in torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DIVERGENCES": "trainers.divergences",
    "DivergenceSpec": "trainers.divergences",
    "divergence_from_logprobs": "trainers.divergences",
    "token_divergence": "trainers.divergences",
    "METHODS": "trainers.objectives",
    "Objective": "trainers.objectives",
    "load_method": "trainers.objectives",
    "register_method": "trainers.objectives",
    "release_loss": "trainers.bridge_garden",
    "chunked_token_loss": "trainers.chunked",
    "TrainConfig": "trainers.loop",
    "TrainResult": "trainers.loop",
    "train": "trainers.loop",
    "TopK": "trainers.topk",
    "mean_topk_gap": "trainers.topk",
    "topk_divergence": "trainers.topk",
    "topk_features": "trainers.topk",
    "topk_logprobs": "trainers.topk",
    "align_logits": "trainers.vocab",
    "shared_vocab": "trainers.vocab",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
