"""Benchmarks: data, prompts and scoring. `load_task(name)` returns a registered Task."""

from tasks import arith, codealpaca, gsm8k, humaneval, math  # noqa: F401  (registers the tasks)
from tasks.base import Doc, Messages, Task, load_task, register_task, task_names

__all__ = ["Doc", "Messages", "Task", "load_task", "register_task", "task_names"]
