"""Rich progress bars for long phases (generation, supervision, training, evaluation)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int, completed: int = 0) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, **fields)`; shows a bar with ETA on a terminal, stays silent otherwise."""
    enabled = sys.stderr.isatty() and not os.environ.get("HARNESS_NO_PROGRESS")
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, disable=not enabled, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, info="")

        def advance(n: int = 1, **fields: Any) -> None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            progress.update(task, advance=n, info=info)

        yield advance
