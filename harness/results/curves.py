"""Training-loss curves of a run, read from the per-step log its record names (`training.log`, under the results
directory) for the leaderboard.

Each line is one optimizer step's JSON object with at least `loss`; its `step` when it has one, else its line
number. Lines that are not such objects (a torn last line of a killed run) are left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def loss_curve(path: Path) -> list[tuple[int, float]]:
    """(step, loss) of every logged step in the log at `path`, in step order; empty when there is no log."""
    if not path.is_file():
        return []
    points = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("loss"), (int, float)):
            continue
        step = entry.get("step", number)
        if isinstance(step, int) and math.isfinite(entry["loss"]):
            points.append((step, float(entry["loss"])))
    return sorted(points)
