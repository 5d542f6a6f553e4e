"""A sweep cell's lock in the results dir: one holder at a time across processes (and machines sharing the dir),
a dead or silent holder's lock taken over, and two concurrent sweeps over one grid run each cell once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cell_lock import CellLock

ROOT = Path(__file__).resolve().parents[1]


def _holder(path: Path, host: str, pid: int, age_s: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "started": "2026-12-03T00:00:00Z", "token": "t"}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_one_holder_at_a_time_and_release_frees_it(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "cell.lock"
    first, second = CellLock(path), CellLock(path)
    assert first.acquire() is None
    holder = second.acquire()
    assert holder is not None and f"pid {os.getpid()}" in holder and socket.gethostname() in holder
    first.release()
    assert not path.exists()
    assert second.acquire() is None
    second.release()


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path: Path, caplog) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / "cell.lock"
    _holder(path, socket.gethostname(), int(dead.stdout))
    lock = CellLock(path)
    assert lock.acquire() is None
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text and str(path) in caplog.text
    lock.release()


def test_another_machine_holds_its_lock_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    path = tmp_path / "cell.lock"
    _holder(path, "node-17", 4242, age_s=10)
    assert "node-17" in CellLock(path, stale_s=60).acquire()
    _holder(path, "node-17", 4242, age_s=120)  # no heartbeat for longer than the stale timeout: the holder is gone
    lock = CellLock(path, stale_s=60)
    assert lock.acquire() is None
    lock.release()


def test_the_heartbeat_keeps_a_long_held_lock_fresh(tmp_path: Path) -> None:
    path = tmp_path / "cell.lock"
    lock = CellLock(path, heartbeat_s=0.05, stale_s=0.5)
    assert lock.acquire() is None
    time.sleep(1.0)
    assert time.time() - path.stat().st_mtime < 0.5
    other = CellLock(path, stale_s=0.5)
    assert other.acquire() is not None  # still held: not stale
    lock.release()


def test_release_leaves_a_lock_someone_else_took_over(tmp_path: Path) -> None:
    path = tmp_path / "cell.lock"
    lock = CellLock(path, heartbeat_s=0.05)
    assert lock.acquire() is None
    _holder(path, "node-3", 7)  # our lock was judged stale and taken over
    lock.release()
    assert json.loads(path.read_text())["host"] == "node-3"


SWEEP = """
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from harness import pipeline, sweep
from harness.pipeline import RunSpec
from harness.record_parts import DataPin, ModelPin
from harness.records import write_record
from tests.test_records import make_record

log, results, started = Path({log!r}), Path({results!r}), Path({started!r})
def run(spec):
    with log.open("a") as handle:
        handle.write(json.dumps([os.getpid(), spec.method, spec.seed]) + "\\n")
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:  # hold the cell until the other sweep is under way
        time.sleep(0.05)
    time.sleep(2)
    cell = pipeline.planned_experiment(spec)
    models = {{role: ModelPin.from_dict(pin, role) for role, pin in cell.build["models"].items()}}
    fields = dict(pair=spec.pair, method=spec.method, seed=spec.seed, models=models)
    fields |= dict(data=DataPin.from_dict(cell.build["data"]))
    fields |= dict(method_params=cell.method_params, train_config=cell.train_config)
    write_record(make_record(**fields), results)
pipeline.run = run
specs = sweep.grid(["tiny"], ["hard"], [0, 1], {{}}, RunSpec(pair="", method=""))
if {second!r}:
    started.touch()
result = sweep.run_sweep(specs, results)
print(json.dumps({{"ran": result.ran, "busy": sorted(result.busy), "skipped": result.skipped}}))
"""


@pytest.mark.slow
def test_two_concurrent_sweeps_run_each_cell_once(tmp_path: Path) -> None:
    log, results, started = tmp_path / "runs.log", tmp_path / "results", tmp_path / "second-started"
    paths = dict(root=str(ROOT), log=str(log), results=str(results), started=str(started))

    def start(second: bool) -> subprocess.Popen:
        script = SWEEP.format(**paths, second=second)
        return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)

    first = start(False)
    deadline = time.time() + 120
    while not log.exists() and time.time() < deadline:  # the first sweep is running its first cell
        time.sleep(0.05)
    second = start(True)
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in (first, second)]
    runs = [tuple(json.loads(line)[1:]) for line in log.read_text().splitlines()]
    assert sorted(runs) == [("hard", 0), ("hard", 1)]  # each cell trained once, by one of the sweeps
    assert sum(len(o["ran"]) for o in outs) == 2 and outs[1]["busy"]  # the second found the first's cell running
    records = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    assert sorted(r["seed"] for r in records) == [0, 1] and all(r["attempts"] == 1 for r in records)
    assert not list((results / "locks").glob("*.lock"))
