"""Heat-map rendering: PNG bytes, escaped self-contained HTML with one hover box per token, the risk view."""

import numpy as np
import torch

from harness.analysis.render import Panel, write_heatmap_png, write_token_html
from harness.analysis.risk_view import risk_panel, write_risk_html


def test_png_and_html(tmp_path):
    panel = Panel(
        "kappa",
        ["let", "<b>", "x"],
        ["hard", "soft"],
        np.array([[0.0, 1.0, -0.5], [0.2, 0.1, 0.0]]),
        cmap="RdBu_r",
        centred=True,
    )
    png = write_heatmap_png(tmp_path / "map.png", [panel], "title")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = write_token_html(tmp_path / "map.html", [panel], "a <title>", note="n & m").read_text()
    assert page.count("class='tip'") == 6
    assert "&lt;b&gt;<span class='tip'>1</span>" in page  # the token escaped, its value on hover
    assert "a &lt;title&gt;" in page and "n &amp; m" in page and "<script" not in page


def test_risk_view_colours_peaked_tokens_as_bridges(tmp_path):
    logits = torch.tensor([[9.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    panel = risk_panel("doc 0", ["7", " then"], logits, decode=lambda i: f"tok{i}")
    assert panel.values[0, 0] > 0.9 and panel.values[0, 1] == 0.0
    assert "teacher top 3: tok0 1.000" in panel.hovers[0][0]
    page = write_risk_html(tmp_path / "risk.html", [panel], "risk").read_text()
    assert page.count("class='tip'") == 2 and "estimated risk" in page
