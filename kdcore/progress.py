"""What a long run shows as it goes: timestamped log lines (everywhere, a terminal or a file) and labelled rich
progress bars (on a terminal only)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
_labels: ContextVar[tuple[str, ...]] = ContextVar("progress_labels", default=())


def log_line(text: str) -> None:
    """One line on stderr, prefixed with the UTC time, never wrapped (it reads the same in a file and on a
    terminal)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    console.print(f"{stamp} {text}", markup=False, highlight=False, soft_wrap=True)


@contextmanager
def progress_label(text: str) -> Iterator[None]:
    """Prefix the description of every progress bar opened inside with `text` (labels nest: `a · b · bar`)."""
    token = _labels.set((*_labels.get(), text))
    try:
        yield
    finally:
        _labels.reset(token)


def labelled(description: str) -> str:
    """`description` behind the labels of the enclosing `progress_label` blocks."""
    return " · ".join((*_labels.get(), description))


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
        task = progress.add_task(labelled(description), total=total, completed=completed, info="")

        def advance(n: int = 1, **fields: Any) -> None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            progress.update(task, advance=n, info=info)

        yield advance
