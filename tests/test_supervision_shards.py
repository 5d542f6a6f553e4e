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
    assert "supervision shard" in caplog.text and "is damaged" in caplog.text and "rebuilding it" in caplog.text
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


def _small_build(calls: list[int]):
    """A shard builder of known data (no model): rows i..stop of a counting column."""
    from kdcore.costs import PhaseCost

    def build(index: int, start: int, stop: int):
        calls.append(index)
        data = datasets.Dataset.from_dict({"prompt_ids": [[i, i + 1] for i in range(start, stop)]})
        return data, PhaseCost(tokens=stop - start), {}

    return build


def _garble(arrow: Path) -> None:
    """Rewrite a shard's Arrow file with other values in the same layout: it still reads as valid Arrow."""
    import pyarrow as pa

    with pa.memory_map(str(arrow)) as source:
        table = pa.ipc.open_stream(source).read_all()
    changed = table.set_column(0, "prompt_ids", pa.array([[7, 7]] * len(table), type=table.schema.field(0).type))
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, changed.schema) as writer:
        writer.write_table(changed)


@pytest.mark.parametrize(
    "damage",
    [
        _garble,
        lambda arrow: arrow.write_bytes(os.urandom(arrow.stat().st_size)),
        lambda arrow: arrow.write_bytes(arrow.read_bytes()[:-40]),
        lambda arrow: arrow.write_bytes(b""),
        lambda arrow: (arrow.parent.parent / "meta.json").write_bytes(os.urandom(50)),
        lambda arrow: (arrow.parent / "state.json").write_text("{}"),
    ],
    ids=["garbled-readable-arrow", "random-bytes", "truncated", "empty", "random-meta", "edited-state"],
)
def test_a_damaged_shard_is_named_in_one_line_and_rebuilt(tmp_path: Path, caplog, damage) -> None:
    from harness.supervise import load_or_build_shards

    calls: list[int] = []
    first, _ = load_or_build_shards(tmp_path, "k", 10, 4, _small_build(calls))
    reference = columns(first)
    (arrow,) = (tmp_path / "shards" / "00001" / "data").glob("*.arrow")
    damage(arrow)
    calls.clear()
    again, cost = load_or_build_shards(tmp_path, "k", 10, 4, _small_build(calls))
    assert calls == [1] and columns(again) == reference and not cost.reused
    (line,) = [r.getMessage() for r in caplog.records if "supervision shard" in r.getMessage()]
    assert f"supervision shard {tmp_path / 'shards' / '00001'} is damaged" in line and "rebuilding it" in line
    assert "\n" not in line
    calls.clear()
    _, cost = load_or_build_shards(tmp_path, "k", 10, 4, _small_build(calls))
    assert calls == [] and cost.reused  # the rebuilt shard verifies


def test_a_damaged_cost_file_is_rebuilt_from_the_shards(tmp_path: Path, caplog) -> None:
    from harness.supervise import load_or_build_shards

    calls: list[int] = []
    _, built = load_or_build_shards(tmp_path, "k", 10, 4, _small_build(calls))
    for content in (b"\x00\xff", b"[]", b'{"tokens": "many"}', b'{"colour": 1}'):
        (tmp_path / "cost.json").write_bytes(content)
        calls.clear()
        _, cost = load_or_build_shards(tmp_path, "k", 10, 4, _small_build(calls))
        assert calls == [] and cost.tokens == built.tokens == 10
    assert "is damaged" in caplog.text
