"""User-facing errors: one line, no traceback, exit code 2 (see harness.cli)."""

from __future__ import annotations

from collections.abc import Iterable


class HarnessError(Exception):
    """An error caused by the user's input (bad name, missing file, malformed config)."""

    exit_code = 2


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> HarnessError:
    """The standard error for a name that is not one of the valid choices."""
    return HarnessError(f"unknown {kind} {value!r}; valid choices: {', '.join(sorted(choices))}")


class Interrupted(HarnessError):
    """A run stopped on request (SIGTERM) after saving its progress; the same command resumes it."""

    exit_code = 143  # 128 + SIGTERM, what schedulers expect from a pre-empted job
