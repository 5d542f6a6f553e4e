"""Where the harness keeps what it builds once and reuses: tiny models, teacher supervision, teacher scores."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """`$HARNESS_CACHE`, else `$XDG_CACHE_HOME/kd-harness`, else `~/.cache/kd-harness`."""
    if env := os.environ.get("HARNESS_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kd-harness"


def cache_key(spec: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able spec: equal specs share one cache entry."""
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
