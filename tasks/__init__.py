"""Benchmarks: data, prompts and scoring. `load_task(name)` returns a registered Task."""

from tasks import arith  # noqa: F401  (registers the task)
from tasks.base import Doc, Messages, Task, load_task, register_task, task_names

__all__ = ["Doc", "Messages", "Task", "load_task", "register_task", "task_names"]
