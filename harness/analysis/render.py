"""Per-token heat maps of one text: a PNG (matplotlib) and a self-contained HTML view with hover details.

Generic over what is coloured: rows of values over the same tokens (per-method kappa on the synthetic process, or a
teacher-only risk estimate on a real model's completion).
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure

from kdcore.io import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class Panel:
    """One quantity over one text's tokens: a row per label (for example per method)."""

    title: str
    tokens: Sequence[str]
    row_labels: Sequence[str]
    values: np.ndarray  # [rows, tokens]
    cmap: str = "Reds"
    centred: bool = False  # a diverging scale centred on 0 (for signed quantities)
    hovers: Sequence[Sequence[str]] | None = None  # [rows][tokens] HTML fragments shown on hover


def _norm(panel: Panel) -> colors.Normalize:
    finite = panel.values[np.isfinite(panel.values)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    top = top if top > 0 else 1.0
    if panel.centred:
        return colors.TwoSlopeNorm(vmin=-top, vcenter=0.0, vmax=top)
    return colors.Normalize(vmin=min(0.0, float(finite.min()) if finite.size else 0.0), vmax=top)


def write_heatmap_png(path: str | Path, panels: Sequence[Panel], title: str) -> Path:
    """One image: a heat map per panel, tokens along the x axis, each cell annotated with its value."""
    heights = [len(p.row_labels) + 1.2 for p in panels]
    width = max(len(p.tokens) for p in panels)
    fig = Figure(figsize=(max(8.0, 0.62 * width + 2.5), 0.42 * sum(heights) + 1.0), layout="tight")
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        cmap, norm = matplotlib.colormaps[panel.cmap], _norm(panel)
        image = ax.imshow(panel.values, cmap=cmap, norm=norm, aspect="auto")
        ax.set_title(panel.title, fontsize=9, loc="left")
        ax.set_yticks(range(len(panel.row_labels)), panel.row_labels, fontsize=8)
        ax.set_xticks(range(len(panel.tokens)), panel.tokens, fontsize=8)
        for (row, col), value in np.ndenumerate(panel.values):
            colour = _text_colour(cmap(norm(value)))
            ax.text(col, row, f"{value:.2g}", ha="center", va="center", fontsize=6, color=colour)
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    fig.suptitle(title, fontsize=10)
    stream = io.BytesIO()
    fig.savefig(stream, format="png", dpi=130)
    return atomic_write_bytes(path, stream.getvalue())


STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: separate; border-spacing: 2px 6px; }
td.label { font-size: 0.85em; padding-right: 1em; white-space: nowrap; }
span.tok { position: relative; display: inline-block; padding: 2px 4px; margin: 0 1px; border-radius: 3px;
           font-family: monospace; cursor: default; }
span.tok .tip { visibility: hidden; position: absolute; z-index: 1; top: 1.9em; left: 0; min-width: 16em;
                background: #fff; color: #000; border: 1px solid #888; padding: 6px; font-size: 0.8em;
                box-shadow: 2px 2px 6px rgba(0,0,0,.25); white-space: nowrap; }
span.tok:hover .tip { visibility: visible; }
h2 { font-size: 1em; margin-top: 1.2em; }
p.note { font-size: 0.85em; color: #444; max-width: 60em; }
"""


def _text_colour(rgba: tuple[float, ...]) -> str:
    luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
    return "#000" if luminance > 0.55 else "#fff"


def write_token_html(path: str | Path, panels: Sequence[Panel], title: str, note: str = "") -> Path:
    """A self-contained page: per panel, each row's tokens coloured by value; hovering a token shows its details."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    parts.append(f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>")
    if note:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    for panel in panels:
        cmap, norm = matplotlib.colormaps[panel.cmap], _norm(panel)
        parts.append(f"<h2>{html.escape(panel.title)}</h2><table>")
        for row, label in enumerate(panel.row_labels):
            cells = []
            for col, token in enumerate(panel.tokens):
                value = float(panel.values[row, col])
                rgba = cmap(norm(value)) if np.isfinite(value) else (1.0, 1.0, 1.0, 1.0)
                hover = panel.hovers[row][col] if panel.hovers else f"{value:.4g}"
                cells.append(
                    f"<span class='tok' style='background:{colors.to_hex(rgba)};color:{_text_colour(rgba)}'>"
                    f"{html.escape(token)}<span class='tip'>{hover}</span></span>"
                )
            parts.append(f"<tr><td class='label'>{html.escape(label)}</td><td>{''.join(cells)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return atomic_write_text(path, "".join(parts))
