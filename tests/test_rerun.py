"""`harness rerun`: a record's experiment rebuilt from the record alone, refused where it could not reproduce it,
and reproducing a run's scores exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness import records as records_module
from harness import rerun as rerun_module
from harness.cli import main
from harness.experiment import experiment_key
from harness.pipeline import planned_experiment
from harness.records import read_record
from harness.rerun import check_rerun, differences, spec_from_record
from kdcore.costs import cpu_kernels
from kdcore.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "results" / "runs").glob("tiny-*.json"))


def one_per_method() -> list[Path]:
    chosen: dict[str, Path] = {}
    for path in COMMITTED:
        chosen.setdefault(read_record(path).method, path)
    return list(chosen.values())


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as done:
        main()
    return int(done.value.code or 0)


def test_every_committed_method_s_record_is_the_experiment_this_checkout_would_rerun() -> None:
    assert len(one_per_method()) >= 5
    for path in one_per_method():
        record = read_record(path)
        spec = spec_from_record(record)
        assert spec.tuning == record.train_config.get("tuning") and spec.seed == record.seed
        assert differences(record.experiment().to_dict(), planned_experiment(spec).to_dict()) == [], path.name


def _doctored(tmp_path: Path, change) -> Path:
    data = json.loads(COMMITTED[0].read_text())
    change(data)
    path = tmp_path / "doctored.json"
    path.write_text(json.dumps(data))
    return path


def test_other_code_other_weights_and_uncommitted_code_are_refused_in_one_line(tmp_path, monkeypatch) -> None:
    original = read_record(COMMITTED[0])
    monkeypatch.setattr(rerun_module, "code_version", lambda: original.environment["code_version"])
    warnings = check_rerun(original, spec_from_record(original))  # the committed records predate cpu_kernels
    assert warnings == [
        f"cpu_kernels: {cpu_kernels()} here, not recorded in the record (scores can differ in the last digits)"
    ]
    here = read_record(_doctored(tmp_path, lambda d: d["environment"].update(cpu_kernels=cpu_kernels())))
    assert check_rerun(here, spec_from_record(here)) == []

    def refusal(change) -> str:
        record = read_record(_doctored(tmp_path, change))
        with pytest.raises(HarnessError) as refused:
            check_rerun(record, spec_from_record(record))
        message = str(refused.value)
        assert "\n" not in message and message.endswith("(--force runs it anyway)")
        assert check_rerun(record, spec_from_record(record), force=True)  # the same findings, as warnings
        return message

    assert "made by code 000000000000" in refusal(lambda d: d["environment"].update(code_version="0" * 40))
    dirty = original.environment["code_version"] + "+dirty"
    assert "uncommitted code" in refusal(lambda d: d["environment"].update(code_version=dirty))
    other_weights = refusal(lambda d: d["models"]["teacher"].update(weights_sha256="f" * 64))
    assert "build.models.teacher.weights_sha256 differ" in other_weights
    assert "train_config.evaluation.temperature" in refusal(
        lambda d: d["train_config"]["evaluation"].update(temperature=0.7)
    )


def test_a_missing_or_malformed_record_is_a_one_line_error(tmp_path, monkeypatch, capsys) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"pair": "tiny"')
    for path, reason in ((tmp_path / "none.json", "no such record"), (broken, "not a readable run record")):
        assert cli(monkeypatch, "rerun", str(path)) == 2  # bad input
        err = capsys.readouterr().err.strip()
        assert reason in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_rerun_reproduces_the_run_s_scores_and_samples_exactly(mini_tiny, tmp_path, monkeypatch, capsys) -> None:
    first, again = tmp_path / "first", tmp_path / "again"
    for module in (records_module, rerun_module):  # a committed checkout, whatever this one's state
        monkeypatch.setattr(module, "code_version", lambda: "a" * 40)
    args = ("run", "--method", "hybrid", "--max-steps", "20", "--limit", "4", "--results-dir", str(first))
    assert cli(monkeypatch, *args) == 0
    (path,) = (first / "runs").glob("*.json")
    record = read_record(path)
    assert record.environment["cpu_kernels"] == cpu_kernels()
    capsys.readouterr()
    assert cli(monkeypatch, "rerun", str(path), "--results-dir", str(again)) == 0
    assert "reproduced exactly" in capsys.readouterr().err
    (rerun_path,) = (again / "runs").glob("*.json")
    repeat = read_record(rerun_path)
    assert experiment_key(repeat.experiment()) == experiment_key(record.experiment())
    assert repeat.run_id != record.run_id and repeat.scores.keys() == record.scores.keys()
    for task, score in record.scores.items():
        samples = [(root / s.samples).read_text() for root, s in ((first, score), (again, repeat.scores[task]))]
        assert samples[0] == samples[1] and repeat.scores[task].metrics == score.metrics
    logs = [
        [json.loads(line) for line in (root / r.training.log).read_text().splitlines()]
        for root, r in ((first, record), (again, repeat))
    ]
    for row in (*logs[0], *logs[1]):
        del row["tokens_per_s"]  # throughput: the only value that depends on the machine
    assert logs[0] == logs[1] and len(logs[0]) == 20  # the same losses and learning rates, step for step
    weights = [
        load_file(root / "models" / r.run_id / "model.safetensors") for root, r in ((first, record), (again, repeat))
    ]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
