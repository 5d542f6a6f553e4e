"""`csd` and `dld` as methods: soft-label KD whose divergence defaults to concrete score distillation or direct
logit distillation (formulas in trainers.divergences). CSD's release trains on the distillation loss alone
(`--kd-ratio 1.0` in aailab-kaist/CSD scripts/gpt2/kd_CSD/csd.sh), as `soft` does; `hybrid --div csd` mixes in CE."""

from __future__ import annotations

from dataclasses import dataclass

from trainers.objectives import Soft, SoftParams, register_method
from trainers.params import param

CSD_PAPER = "Kim et al. 2025, arXiv 2509.25837 (aailab-kaist/CSD)"


@dataclass
class CSDParams(SoftParams):
    divergence: str = param(
        "csd", "divergence to the teacher (csd; any other name works too)", kind="str", source=CSD_PAPER
    )


@dataclass
class DLDParams(SoftParams):
    divergence: str = param(
        "dld", "divergence to the teacher (dld; any other name works too)", kind="str", source=CSD_PAPER
    )


@register_method
class CSD(Soft):
    name = "csd"
    description = (
        "concrete score distillation: 1/4 sum_ij a_i b_j (d_i - d_j)^2, d = z_S - z_T, fixed weights "
        "(div_params weights = student | teacher | uniform | x-y; default student: 1/2 Var_w(d), w = softmax(z_S/T), "
        "gradient w * (d - E_w d)); shift-invariant; on cached top-k the k ids + tail bucket are the vocabulary"
    )
    Params = CSDParams


@register_method
class DLD(Soft):
    name = "dld"
    description = (
        "direct logit distillation: 1/4 sum_v w_v (n(z_S)_v - n(z_T)_v)^2, w fixed (div_params weights = uniform | "
        "student | teacher), n = normalization none | mean | min | max | std | range | logsoftmax; cached top-k "
        "stores log-probs, so there `none` compares log-probs"
    )
    Params = DLDParams
