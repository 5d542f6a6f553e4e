"""Benchmarks: data, prompts and scoring. `load_task(name)` returns a registered Task (`TASKS`: the modules of
`tasks.benchmarks` are searched on first use)."""

from tasks.base import TASKS, Doc, Messages, Task, load_task, register_task

__all__ = ["TASKS", "Doc", "Messages", "Task", "load_task", "register_task"]
