"""DistiLLM (Ko et al., ICML 2024) as a method: its skew KL on the distillation loss alone.

The release's scripts (jongwooko/distillm scripts/*/distillm/*.sh) train with `--type adaptive-srkl` (five of
seven; one `adaptive-sfkl`, one `srkl-aesop`) at `--skew-alpha 0.1` and `--kd-ratio 1.0`: the skew reverse KL
KL(Q || skew Q + (1 - skew) P), or with `divergence = sfkl` the skew forward KL KL(P || skew P + (1 - skew) Q)
(formulas in trainers.divergences; `skewed_reverse_kl` / `skewed_forward_kl` in distillm/losses.py), averaged over
the batch's completion tokens. Its adaptive off-policy sampling is not part of this method (trainers.releases).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainers.objectives import Objective, Params, SoftParams, register_method, select_top_param, soft_term
from trainers.params import param
from trainers.releases import source


@dataclass
class DistiLLMParams(Params):
    divergence: str = param(
        "srkl",
        "skew KL: srkl KL(Q || sQ + (1-s)P) or sfkl KL(P || sP + (1-s)Q)",
        kind="str",
        choices=("srkl", "sfkl"),
        source=source("distillm", "divergence"),
    )
    skew: float = param(
        0.1,
        "s, the skew: the weight of the divergence's own side in the mixture",
        kind="float",
        low=0.0,
        high=1.0,
        open_high=True,
        source=source("distillm", "skew"),
    )
    select_top: float = select_top_param()

    def soft(self) -> SoftParams:
        """The same loss as a `soft` method's parameters."""
        return SoftParams(divergence=self.divergence, div_params={"skew": self.skew}, select_top=self.select_top)


@register_method
class DistiLLM(Objective):
    name = "distillm"
    description = (
        "DistiLLM: skew reverse KL KL(Q || 0.1 Q + 0.9 P) (divergence = sfkl: KL(P || 0.1 P + 0.9 Q)) to the "
        "teacher on teacher completions, distillation loss alone"
    )
    Params = DistiLLMParams
    soft_labels = True

    def __init__(self, params: DistiLLMParams | None = None) -> None:
        super().__init__(params)
        self.soft_params = self.params.soft()

    def token_losses(self, logits, targets, teacher, progress):
        soft = soft_term(self.soft_params, logits, teacher)
        return {"loss": soft, "soft_loss": soft.detach()}
