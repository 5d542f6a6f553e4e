"""Damaged run state and write errors: a checkpoint or run.json cut short or garbled is named in one line and the
run restarts (never a rerun stuck failing the same way); a write that fails (full disk, file size limit) is one line
naming the path and leaves nothing half-written."""

from __future__ import annotations

import copy
import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.resume import STATE_FILE, RunState
from kdcore.io import atomic_folder
from tests.tiny_training import synthetic_examples, tiny_student
from trainers.loop import TrainConfig, train
from trainers.objectives import load_method

ROOT = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(max_steps=4, batch_size=4, lr=1e-2, seed=1)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:  # one byte changed: the file still has its length and (often) its format
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("model.safetensors", _cut),
        ("model.safetensors", _flip),
        ("optimizer.bin", _cut),
        ("random_states_0.pkl", lambda p: p.write_bytes(os.urandom(64))),
        ("history.json", lambda p: p.write_text("[{}")),
        ("step.txt", lambda p: p.write_text("three")),
        ("step.txt", lambda p: p.write_text("9")),
    ],
)
def test_a_damaged_checkpoint_is_named_and_training_restarts(tmp_path: Path, caplog, name: str, damage) -> None:
    initial = tiny_student()
    reference = copy.deepcopy(initial)
    full = train(reference, load_method("hard"), synthetic_examples(), CONFIG, pad_id=0)
    train(copy.deepcopy(initial), load_method("hard"), synthetic_examples(), CONFIG, pad_id=0, out_dir=tmp_path)
    damage(tmp_path / "checkpoint" / name)
    again = copy.deepcopy(initial)
    result = train(again, load_method("hard"), synthetic_examples(), CONFIG, pad_id=0, out_dir=tmp_path)
    assert result.resumed_from == 0 and result.history == full.history
    expected, got = _weights(reference), _weights(again)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    (line,) = [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
    assert line.startswith(f"checkpoint {tmp_path / 'checkpoint'} is damaged (") and "restarts from step 0" in line


@pytest.mark.parametrize("content", [b"", b'{"run_id": "r", "attem', b"[]", b'{"run_id": 3, "attempt_costs": []}'])
def test_a_damaged_run_state_restarts_the_run(tmp_path: Path, caplog, content: bytes) -> None:
    folder = tmp_path / "run"
    state = RunState.begin(folder, lambda: "run-1")
    (folder / "checkpoint").mkdir()
    (folder / STATE_FILE).write_bytes(content)
    again = RunState.begin(folder, lambda: "run-2")
    assert again.run_id == "run-2" and again.attempts == 1 and state.run_id == "run-1"
    assert not (folder / "checkpoint").exists()  # its attempts and cost are unknown: the run starts over
    assert f"run state {folder / STATE_FILE} is damaged" in caplog.text
    assert RunState.begin(folder, lambda: "run-3").run_id == "run-2"  # and the next attempt reads it again


SAVE = """
import resource, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from kdcore.io import atomic_folder
from tests.tiny_training import tiny_student
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
try:
    with atomic_folder(Path({folder!r})) as staging:
        tiny_student().save_pretrained(staging)
except OSError as err:
    print(err.errno, err.filename)
"""


def test_a_file_size_limit_while_saving_a_model_leaves_no_model_folder(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "run-1"
    script = SAVE.format(root=str(ROOT), folder=str(folder), limit=4096)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == [str(errno.EFBIG), str(folder)], done.stderr
    assert list((tmp_path / "models").iterdir()) == []  # neither the folder nor its staging copy
    with atomic_folder(folder) as staging:
        tiny_student().save_pretrained(staging)
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()


def test_a_failed_save_keeps_the_previous_folder_whole(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    with atomic_folder(folder) as staging:
        (staging / "weights").write_text("old")
    with pytest.raises(OSError) as failed, atomic_folder(folder) as staging:
        (staging / "weights").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert failed.value.filename == str(folder) and (folder / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.slow
def test_a_file_size_limit_in_the_cli_is_one_line_naming_the_file(own_tiny_cache, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    command = [sys.executable, "-m", "tests.mini_cli", "eval", "--model", "builtin:tiny/student", "--tasks", "arith"]
    command += ["--limit", "64", "--out", str(out)]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, preexec_fn=limit, timeout=600)
    lines = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    (error,) = [line for line in lines if "error:" in line]
    assert "file size limit reached writing" in error and str(out / "samples") in " ".join(lines)
    assert "Traceback" not in done.stderr
    assert not (out / "samples" / "arith.jsonl").exists()  # the finished log is written whole or not at all


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_the_rerun_resumes(tmp_path: Path, monkeypatch) -> None:
    from accelerate import Accelerator

    from kdcore.errors import HarnessError

    initial = tiny_student()
    reference = copy.deepcopy(initial)
    config = TrainConfig(max_steps=4, batch_size=4, lr=1e-2, seed=1, checkpoint_every=1)
    full = train(reference, load_method("hard"), synthetic_examples(), config, pad_id=0)
    real_save, calls = Accelerator.save_state, []

    def save_state(self, folder, **kwargs):
        calls.append(folder)
        if len(calls) == 3:
            real_save(self, folder, **kwargs)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(self, folder, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    with pytest.raises(HarnessError, match=r"writing the checkpoint .*checkpoint\.new failed \(\[enforce fail") as err:
        train(copy.deepcopy(initial), load_method("hard"), synthetic_examples(), config, pad_id=0, out_dir=tmp_path)
    assert "previous checkpoint is kept" in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "checkpoint" / "step.txt").read_text() == "2" and not (tmp_path / "checkpoint.new").exists()
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    again = copy.deepcopy(initial)
    result = train(again, load_method("hard"), synthetic_examples(), config, pad_id=0, out_dir=tmp_path)
    assert result.resumed_from == 2 and result.history == full.history
    expected, got = _weights(reference), _weights(again)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
