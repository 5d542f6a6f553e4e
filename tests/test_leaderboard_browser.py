"""leaderboard.html as a user sees it: rendered by headless Chromium, offline, from a copy of the page alone.

Skips when Chromium is absent (install: `apt-get install -y chromium`). Screenshots stay in the tmp dir.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from harness.results.build import build_leaderboard
from harness.results.estimates import leaderboard
from tests.fake_records import write_fake_results

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")

# Appended to a copy of the page: reports what rendered, after clicking the first score column twice
# (descending) in the second section's scores table (the first, if only one), and whether anything overflows
# the window, into a <pre id="probe"> that --dump-dom reads back.
PROBE = """<script>
window.addEventListener("load", () => {
  const shown = (el) => { const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility === "visible"; };
  const tables = [...document.querySelectorAll("table.sortable")];
  const scores = tables[tables.length > 2 ? 2 : 0];  // tables come in (scores, cost) per section
  const header = scores.querySelectorAll("thead th")[3];
  header.click(); header.click();
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    tables: tables.map((t) => ({shown: shown(t), rows: t.tBodies[0].rows.length})),
    images: [...document.images].map((i) => ({w: i.naturalWidth, h: i.naturalHeight, shown: shown(i),
      shownWidth: i.getBoundingClientRect().width})),
    sorted: [...scores.tBodies[0].rows].map((r) => r.cells[0].textContent),
    overflow: Math.max(...tables.map((t) => t.getBoundingClientRect().right)) - window.innerWidth,
    scroll: document.documentElement.scrollWidth - window.innerWidth,
  });
  document.body.append(probe);
});
</script>"""


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # any network fetch would fail
        f"--user-data-dir={tmp / 'profile'}",
        "--window-size=1400,2000",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def test_leaderboard_html_renders_tables_plots_and_sorts(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_fake_results(results)
    build_leaderboard(results, baseline="gkd")
    board = leaderboard(results, baseline="gkd")
    page = tmp_path / "page" / "leaderboard.html"  # the page alone: it must need no other file
    page.parent.mkdir()
    page.write_text((results / "leaderboard.html").read_text().replace("</body>", PROBE + "</body>"))

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run"
    probe = json.loads(html.unescape(found.group(1)))

    assert probe["tables"] == [{"shown": True, "rows": len(t.rows)} for t in board.tables for _ in ("scores", "cost")]
    assert probe["overflow"] <= 0 and probe["scroll"] <= 0  # every column visible at 1400 px
    assert len(probe["images"]) == 2 * len(board.tables)
    assert all(i["w"] > 100 and i["h"] > 100 and i["shown"] for i in probe["images"])
    second = board.tables[1]
    benchmark = second.benchmarks[0]
    by_score = sorted(second.rows, key=lambda r: -r.scores[benchmark].mean)
    assert probe["sorted"] == [r.label for r in by_score]

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", (results / "leaderboard.html").as_uri())
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1400)
    assert np.std(pixels[..., :3]) > 0.05  # not a blank page


def test_shipped_leaderboard_shows_every_column_at_1400px(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "results" / "leaderboard.html"
    page = tmp_path / "page" / "leaderboard.html"
    page.parent.mkdir()
    page.write_text(shipped.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run"
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["tables"] and all(t["shown"] for t in probe["tables"])
    assert probe["overflow"] <= 0 and probe["scroll"] <= 0
    assert all(i["shown"] and i["shownWidth"] >= min(i["w"], 1000) - 1 for i in probe["images"])  # not thumbnails
