"""On real pairs: a completion's tokens coloured by the teacher-only bridge-risk estimate (`estimate.estimated_risk`).

The caller runs the teacher over prompt + completion and passes, per completion, its token strings and the teacher's
logits at those positions; `write_risk_html` writes one self-contained page with a row per completion.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from harness.analysis.render import Panel, write_token_html
from trainers.risk_estimate import estimated_risk

NOTE = (
    "Colour = estimated bridge risk from the teacher alone: (top-1 minus top-2 teacher probability) x "
    "(1 - teacher entropy / log V). Near 1: the teacher is sure of one token (a bridge: the exact token matters); "
    "near 0: the teacher spreads over several tokens (a garden). Hover a token for the teacher's view."
)


def risk_panel(
    title: str, tokens: Sequence[str], teacher_logits: torch.Tensor, decode: Callable[[int], str] | None = None
) -> Panel:
    """One completion: `tokens` [T] coloured by the estimated risk of `teacher_logits` [T, V]; hover shows the risk
    and the teacher's top-3 tokens (as ids, or strings through `decode`)."""
    risk = estimated_risk(teacher_logits).double().numpy()
    top = teacher_logits.float().softmax(dim=-1).topk(3, dim=-1)
    hovers = []
    for t in range(len(tokens)):
        names = [decode(int(i)) if decode else str(int(i)) for i in top.indices[t]]
        listed = ", ".join(f"{html.escape(n)} {p:.3f}" for n, p in zip(names, top.values[t].tolist(), strict=True))
        hovers.append(f"estimated risk {risk[t]:.3f}<br>teacher top 3: {listed}")
    return Panel(title, list(tokens), ["risk"], risk[None], cmap="Purples", hovers=[hovers])


def write_risk_html(path: str | Path, panels: Sequence[Panel], title: str) -> Path:
    """The page: one row per completion panel (see `risk_panel`)."""
    return write_token_html(path, panels, title, NOTE)
