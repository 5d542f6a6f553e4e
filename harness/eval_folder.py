"""Where `harness eval` writes: one folder per evaluation (model, tasks and settings), never shared by two.

The default folder is `results/eval/<model>-<hash of the evaluation>`; a folder given with `--out` is marked with
`evaluation.json` (what was evaluated), and an evaluation that finds another one's marker, or scores without a
marker, there stops with a one-line error instead of overwriting it. The same evaluation again resumes or redoes its
own folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from harness.cache import cache_key
from kdcore.errors import HarnessError
from kdcore.io import atomic_write_json

EVAL_ROOT = Path("results") / "eval"
MARKER = "evaluation.json"


def default_folder(evaluation: dict[str, Any]) -> Path:
    """`results/eval/<model name>-<8 hex of the evaluation>`."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(str(evaluation["model"]).rstrip("/")).name) or "model"
    return EVAL_ROOT / f"{name}-{cache_key(evaluation)[:8]}"


def claim(folder: Path, evaluation: dict[str, Any]) -> None:
    """Mark `folder` as `evaluation`'s, refusing one that holds another evaluation."""
    marker = folder / MARKER
    if marker.exists():
        found = json.loads(marker.read_text())
        if found != json.loads(json.dumps(evaluation)):
            raise HarnessError(
                f"{folder} holds another evaluation (model {found.get('model')}, tasks {found.get('tasks')}); "
                "pick another --out, or leave it out for a folder of this evaluation's own"
            )
    elif (folder / "scores.json").exists():
        raise HarnessError(f"{folder} holds an evaluation of unknown settings (no {MARKER}); pick another --out")
    atomic_write_json(marker, evaluation)
