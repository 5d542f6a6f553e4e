"""Teacher supervision in shards: a killed build resumes at its first missing shard, slices built separately
merge into one cache, and an unreadable shard is rebuilt; every way gives the data of one uninterrupted build."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from harness.cache import cache_root
from harness.pipeline import RunSpec, supervise

ROOT = Path(__file__).resolve().parents[1]
PAIRS = """schema_version = 1

[pairs.tiny]
teacher = "builtin:tiny/teacher"
student = "builtin:tiny/student"
architecture = "LlamaForCausalLM"
dtype = "float32"
max_length = 128
max_new_tokens = 24
tasks = ["arith"]
train_task = "arith"
train_prompts = 600

[pairs.tiny.supervision]
drop_truncated = false  # the miniature teacher (a few training steps) never emits EOS
"""  # 600 prompts: shards of 256, 256 and 88


@pytest.fixture
def pairs_file(own_tiny_cache: Path, tmp_path: Path) -> Path:
    """The small pairs file, in a cache of this test's own that shares the session's tiny pair."""
    path = tmp_path / "pairs.toml"
    path.write_text(PAIRS)
    return path


def columns(data: datasets.Dataset) -> dict[str, list]:
    return data.with_format(None).to_dict()


def build_reference(pairs_file: Path) -> tuple[Path, dict[str, list]]:
    """An uninterrupted build: its cache folder (then emptied, so the next build starts from nothing) and data."""
    data = supervise(RunSpec(pair="tiny", method="hard", pairs_file=pairs_file))
    (folder,) = (cache_root() / "supervision").iterdir()
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["00000", "00001", "00002"]
    reference = columns(data)
    shutil.rmtree(folder)
    return folder, reference


@pytest.mark.slow
def test_killed_build_resumes_at_the_first_missing_shard(pairs_file: Path) -> None:
    folder, reference = build_reference(pairs_file)
    command = [sys.executable, "-m", "tests.mini_cli", "supervise", "--pairs-file", str(pairs_file)]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
    first = folder / "shards" / "00000" / "meta.json"
    while process.poll() is None and not first.exists():
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    assert not (folder / "cost.json").exists() and not (folder / "shards" / "00002").exists()
    first_meta = first.read_text()

    data = supervise(RunSpec(pair="tiny", method="hard", pairs_file=pairs_file))
    assert first.read_text() == first_meta  # kept, not built again
    assert columns(data) == reference
    charged = json.loads((folder / "cost.json").read_text())
    shard_costs = [json.loads((folder / "shards" / f"{i:05d}" / "meta.json").read_text())["cost"] for i in range(3)]
    assert charged["wall_s"] == pytest.approx(sum(c["wall_s"] for c in shard_costs))
    assert charged["tokens"] == sum(c["tokens"] for c in shard_costs) > 0


@pytest.mark.slow
def test_slices_merge_and_an_unreadable_shard_is_rebuilt(pairs_file: Path, caplog) -> None:
    folder, reference = build_reference(pairs_file)
    spec = RunSpec(pair="tiny", method="hard", pairs_file=pairs_file)
    assert supervise(spec, (1, 2)) is None  # shard 1 only: the cache is not complete yet
    assert [p.name for p in (folder / "shards").iterdir()] == ["00001"]
    assert columns(supervise(spec, (0, 2))) == reference

    (arrow,) = (folder / "shards" / "00001" / "data").glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    assert columns(supervise(spec)) == reference
    assert "supervision shard" in caplog.text and "unreadable" in caplog.text and "rebuilding it" in caplog.text
    assert (folder / "cost.json").exists()


@pytest.mark.slow
def test_a_full_disk_while_writing_a_shard_leaves_no_shard(pairs_file: Path, monkeypatch) -> None:
    folder, reference = build_reference(pairs_file)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if "/supervision/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    spec = RunSpec(pair="tiny", method="hard", pairs_file=pairs_file)
    with pytest.raises(OSError, match="No space left on device") as failed:
        supervise(spec)
    assert "/supervision/" in failed.value.filename
    assert not list((folder / "shards").iterdir())  # neither a shard nor a half-written staging folder
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert columns(supervise(spec)) == reference
