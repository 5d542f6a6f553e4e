"""`csd` and `dld` as methods: soft-label KD whose divergence is concrete score distillation or direct logit
distillation (formulas in trainers.divergences), on the distillation loss alone, as both releases train.

csd follows CSD's task-specific release (aailab-kaist/CSD task_specific_distillation/train/ddp_csd.py, configs in
task_specific_distillation/config/csd_distill/): teacher-student weights (`csd_ts`, the choice of every
task-specific config; the release has no coding config, so coding pairs use it too), and its reduction: each
sequence's loss is the mean over its completion tokens, and the step's loss the mean over its sequences (one
prompt at a time, `loss / len(prompts)` over `grad_acc_size` prompts). dld is the paper's baseline: raw-logit
MSE over the whole vocabulary with uniform weights (`dld_ablation(w="U", normalize="no")` in
task_agnostic_distillation/csd/losses.py, mean over tokens), so it trains with the online teacher; the top-k
cache, which stores log-probs of k tokens, is refused with a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainers.objectives import Soft, SoftParams, register_method
from trainers.params import param
from trainers.releases import source

CSD_PAPER = "Kim et al. 2025, arXiv 2509.25837"


@dataclass
class CSDParams(SoftParams):
    divergence: str = param(
        "csd",
        "divergence to the teacher (csd; its weights default to teacher-student, div_params weights=...)",
        kind="str",
        source=source("csd", "divergence"),
    )


@dataclass
class DLDParams(SoftParams):
    divergence: str = param(
        "dld",
        "divergence to the teacher (dld: raw logits, uniform weights, no normalisation)",
        kind="str",
        source=source("dld", "divergence"),
    )


@register_method
class CSD(Soft):
    name = "csd"
    description = (
        "concrete score distillation: 1/4 sum_ij a_i b_j (d_i - d_j)^2, d = z_S - z_T, fixed weights a = softmax(z_T), "
        "b = softmax(z_S) (the task-specific release's csd_ts; div_params weights = student | teacher | uniform | "
        "x-y); mean over each sequence's tokens, then over sequences; on cached top-k the k ids + tail bucket are "
        "the vocabulary"
    )
    Params = CSDParams
    reduction = "sequence"


@register_method
class DLD(Soft):
    name = "dld"
    description = (
        "direct logit distillation: 1/4 sum_v (z_S - z_T)_v^2 / V over the whole vocabulary, raw logits (div_params "
        "weights = uniform | student | teacher, normalization = none | mean | min | max | std | range | "
        "logsoftmax); online teacher only: the top-k cache holds log-probs, not logits"
    )
    Params = DLDParams
