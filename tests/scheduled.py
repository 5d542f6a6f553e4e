"""Helpers for the scheduled-sweep tests: a pairs file naming the miniature tiny pair's folders (job processes
cannot see the tests' patched `builtin:tiny`), and the sweep command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import tiny
from harness.cli import main

PAIRS = """schema_version = 1

[pairs.mini]
teacher = "{root}/teacher"
student = "{root}/student"
architecture = "LlamaForCausalLM"
dtype = "float32"
max_length = 96
max_new_tokens = 16
tasks = ["arith"]
train_task = "arith"
train_prompts = 32
cpu_threads = 1
train = {{ max_steps = 5, batch_size = 8, lr = 1e-3 }}

[pairs.mini.supervision]
drop_truncated = false  # the miniature teacher (a few training steps) never emits EOS
"""


def mini_pairs_file(folder: Path) -> Path:
    """A pairs file with pair `mini`: the session's miniature tiny pair, 32 prompts (the `mini_tiny` fixture)."""
    path = folder / "pairs.toml"
    path.write_text(PAIRS.format(root=tiny.ensure_tiny_pair()))
    return path


def sweep(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """`harness sweep ARGS` in this process; its exit code."""
    monkeypatch.setattr(sys, "argv", ["harness", "sweep", *args])
    with pytest.raises(SystemExit) as done:
        main()
    return done.value.code
