"""Distillation objectives and the training loop, on top of exact per-token divergences.

Public API: `token_divergence` / `divergence_from_logprobs` (every divergence, per position), top-k soft labels
(`topk_logprobs`, `topk_divergence`), the method registry (`load_method`, `METHODS`, `register_method`), the
Bridge-Garden release's losses (`release_loss`), the chunked loss and the training loop (`train`, `TrainConfig`).
"""

import trainers.csd  # registers csd, dld
import trainers.distillm  # registers distillm
import trainers.distillm2  # registers distillm2
import trainers.taid  # noqa: F401  (registers taid; the imports above bind the same name)
from trainers.bridge_garden import release_loss
from trainers.chunked import chunked_token_loss
from trainers.divergences import DIVERGENCES, DivergenceSpec, divergence_from_logprobs, token_divergence
from trainers.loop import TrainConfig, TrainResult, train
from trainers.objectives import METHODS, Objective, load_method, method_names, register_method
from trainers.topk import TopK, mean_topk_gap, topk_divergence, topk_features, topk_logprobs
from trainers.vocab import align_logits, shared_vocab

__all__ = [
    "DIVERGENCES",
    "METHODS",
    "DivergenceSpec",
    "Objective",
    "TopK",
    "TrainConfig",
    "TrainResult",
    "align_logits",
    "chunked_token_loss",
    "divergence_from_logprobs",
    "load_method",
    "mean_topk_gap",
    "method_names",
    "register_method",
    "release_loss",
    "shared_vocab",
    "token_divergence",
    "topk_divergence",
    "topk_features",
    "topk_logprobs",
    "train",
]
