"""Run records: atomic writes (a killed writer leaves no partial record), schema round trip, unique ids, and
schema-1 records still read (unpinned)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.accounting import CostLedger
from harness.record_parts import DataPin, ModelPin, TrainingSummary
from harness.records import (
    SCHEMA_VERSION,
    RunRecord,
    load_records,
    migrated_train_config,
    used_teacher_signal,
    write_record,
)
from kdcore.scores import TaskScore
from tests.fake_records import data, models

COMMITTED_V1 = Path(__file__).with_name("data") / "schema1_record.json"  # a record the harness wrote in schema 1


def make_record(**overrides) -> RunRecord:
    ledger = CostLedger()
    with ledger.phase("train") as cost:
        cost.add_work(tokens=100, params=10, flops_per_param_token=6)
    fields = dict(
        pair="tiny",
        method="hybrid",
        seed=0,
        method_params={"alpha": 0.5},
        train_config={"max_steps": 1},
        teacher="t",
        student="s",
        scores={"arith": TaskScore(score=0.5, n=2)},
        teacher_scores={},
        student_before_scores={"arith": TaskScore(score=0.1, n=2, samples="samples/references/k/arith.jsonl")},
        models={role: ModelPin.from_dict(pin, role) for role, pin in models("tiny").items()},
        data=DataPin.from_dict(data("tiny")),
        cost=ledger.run_cost(),
        environment={"device": "cpu"},
        training=TrainingSummary(steps=1),
    )
    return RunRecord(**(fields | overrides))


def test_round_trip(tmp_path: Path) -> None:
    record = make_record()
    path = write_record(record, tmp_path)
    assert path.parent == tmp_path / "runs" and path.stem == record.run_id
    (loaded,), problems = load_records(tmp_path)
    assert problems == [] and loaded == record and loaded.pinned and loaded.schema_version == SCHEMA_VERSION == 2
    assert loaded.cost.phases["train"].flops == 6 * 10 * 100
    assert loaded.student_before_scores["arith"] == TaskScore(
        score=0.1, n=2, samples="samples/references/k/arith.jsonl"
    )
    assert loaded.models["student"].weights_sha256 == models("tiny")["student"]["weights_sha256"]


def test_pinning_fields_are_required() -> None:
    with pytest.raises(TypeError, match="models"):
        RunRecord(**{k: v for k, v in make_record().__dict__.items() if k != "models"})
    data = make_record().to_dict()
    for name in ("models", "data", "student_before_scores"):
        with pytest.raises(ValueError, match=f"missing fields: {name}"):
            RunRecord.from_dict({k: v for k, v in data.items() if k != name})
    with pytest.raises(ValueError, match="models must be an object"):
        RunRecord.from_dict(data | {"models": []})


def test_a_schema_1_record_loads_unpinned_and_round_trips(tmp_path: Path) -> None:
    raw = json.loads(COMMITTED_V1.read_text())
    assert raw["schema_version"] == 1 and "models" not in raw
    record = RunRecord.from_dict(raw)
    assert not record.pinned and record.models == {} and record.data is None and record.student_before_scores == {}
    assert record.teacher_scores["arith"].score == raw["teacher_scores"]["arith"]["score"]
    # read back as it was written (no schema-2 fields invented), its training settings under today's names
    assert record.to_dict() == raw | {"train_config": migrated_train_config(raw["train_config"])}
    with pytest.raises(ValueError, match="unknown fields: models"):
        RunRecord.from_dict(raw | {"models": {}})  # a schema-1 record claiming identities is malformed


WRITER = """
import os, sys, time
sys.path.insert(0, {root!r})
from tests.test_records import make_record
from harness.records import write_record
real_fsync = os.fsync
def slow_fsync(fd):
    real_fsync(fd)
    print("written", flush=True)
    time.sleep(60)
os.fsync = slow_fsync
write_record(make_record(environment={{"pad": "x" * 1_000_000}}), {out!r})
"""


def test_killed_writer_leaves_no_record(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=root, out=str(tmp_path))], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "written"  # the data is on disk, not yet renamed
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert list((tmp_path / "runs").glob("*.json")) == []
    assert load_records(tmp_path) == ([], [])


def test_run_ids_unique_and_json_safe(tmp_path: Path) -> None:
    ids = {make_record().run_id for _ in range(200)}
    assert len(ids) == 200
    record = make_record()
    assert json.loads(write_record(record, tmp_path).read_text())["run_id"] == record.run_id


def test_foreign_schema_is_reported_not_loaded(tmp_path: Path) -> None:
    path = write_record(make_record(), tmp_path)
    data = json.loads(path.read_text()) | {"schema_version": 99}
    path.write_text(json.dumps(data))
    records, problems = load_records(tmp_path)
    assert records == [] and len(problems) == 1 and path.name in problems[0] and "schema_version" in problems[0]
    assert path.exists()


def _written(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / "runs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: [], "holds a JSON array, not an object"),
        (lambda d: None, "holds null, not an object"),
        (lambda d: "record", "holds a string, not an object"),
        (lambda d: d | {"seed": "zero"}, "seed must be an integer"),
        (lambda d: d | {"seed": 1.5}, "seed must be an integer"),
        (lambda d: d | {"seed": True}, "seed must be an integer"),
        (lambda d: d | {"pair": 3}, "pair must be a non-empty string"),
        (lambda d: d | {"attempts": 0}, "attempts must be a positive integer"),
        (lambda d: d | {"scores": {"arith": d["scores"]["arith"] | {"score": 1e308}}}, "scores['arith'].score"),
        (lambda d: d | {"scores": {"arith": d["scores"]["arith"] | {"score": -5}}}, "in [0, 1]"),
        (lambda d: d | {"scores": {"arith": d["scores"]["arith"] | {"score": "0.5"}}}, "in [0, 1]"),
        (lambda d: d | {"scores": {"arith": d["scores"]["arith"] | {"n": -1}}}, "scores['arith'].n"),
        (lambda d: d | {"scores": {"arith": d["scores"]["arith"] | {"metrics": {"x": float("nan")}}}}, "metrics"),
        (lambda d: d | {"scores": {"arith": []}}, "scores['arith'] must be an object"),
        (lambda d: d | {"training": {"steps": 0}}, "training.steps must be a positive integer"),
        (lambda d: d | {"training": {"steps": "600"}}, "training.steps must be a positive integer"),
        (lambda d: d | {"training": []}, "training must be an object"),
        (lambda d: d | {"train_config": {"max_steps": -600}}, "train_config.max_steps must be a positive integer"),
        (lambda d: d | {"cost": {"phases": {"train": {"device_hours": -1}}}}, "device_hours"),
        (lambda d: d | {"cost": []}, "cost.phases missing"),
    ],
)
def test_a_malformed_record_is_skipped_with_one_line_naming_its_file(tmp_path: Path, change, reason) -> None:
    good = write_record(make_record(), tmp_path)
    bad = _written(tmp_path, "bad.json", change(make_record().to_dict()))
    records, problems = load_records(tmp_path)
    assert [r.run_id for r in records] == [good.stem]
    (problem,) = problems
    assert problem.startswith(f"{bad.name}: skipped (") and reason in problem and "\n" not in problem


def test_unreadable_record_files_are_skipped(tmp_path: Path) -> None:
    write_record(make_record(), tmp_path)
    (tmp_path / "runs" / "bytes.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "runs" / "folder.json").mkdir()
    records, problems = load_records(tmp_path)
    assert len(records) == 1 and [p.split(":")[0] for p in problems] == ["bytes.json", "folder.json"]


def test_a_runs_own_outputs_do_not_make_the_code_dirty(tmp_path: Path) -> None:
    from harness.records import has_code_changes

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "leaderboard.md").write_text("old\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    assert not has_code_changes(tmp_path)
    (tmp_path / "results" / "runs" / "new.json").write_text("{}")  # a new record
    (tmp_path / "results" / "leaderboard.md").write_text("rebuilt\n")  # the rebuilt leaderboard
    assert not has_code_changes(tmp_path / "results")  # from any folder of the checkout
    (tmp_path / "code.py").write_text("x = 2\n")
    assert has_code_changes(tmp_path / "results")


def test_the_fixed_teacher_signals_are_the_methods_data_plans() -> None:
    """The migration's table of fixed signals says what each method's data plan uses, so a record carrying the
    command line's default reads as the run was made."""
    from trainers.objectives import METHODS, load_method

    for name in METHODS:
        assert used_teacher_signal(name, {}, "topk") == load_method(name).data_plan().teacher_signal, name
    assert load_method("soft", divergence="dld").data_plan().teacher_signal == "online"
    assert used_teacher_signal("soft", {"divergence": "dld"}, "topk") == "online"


def test_a_record_reads_with_the_teacher_signal_its_method_used(tmp_path: Path) -> None:
    for method, recorded, read in [("hard", "topk", "none"), ("gkd", "topk", "online"), ("soft", "online", "online")]:
        record = make_record(method=method, train_config={"max_steps": 1, "teacher_signal": recorded})
        write_record(record, tmp_path)
        (loaded,), _ = load_records(tmp_path)
        assert loaded.train_config["teacher_signal"] == read
        (tmp_path / "runs" / f"{record.run_id}.json").unlink()


def test_a_record_states_its_experiments_key_and_an_edited_one_is_refused(tmp_path: Path) -> None:
    from harness.experiment import experiment_key

    record = make_record()
    path = write_record(record, tmp_path)
    stated = json.loads(path.read_text())["experiment_key"]
    assert stated == record.experiment_key == experiment_key(record.experiment())
    edited = json.loads(path.read_text())
    edited["method_params"]["alpha"] = 0.9  # a better-looking setting, claimed for the same run
    path.write_text(json.dumps(edited))
    records, problems = load_records(tmp_path)
    assert records == [] and len(problems) == 1 and "\n" not in problems[0]
    assert "is not the key of the experiment the record states" in problems[0]
    del edited["experiment_key"]  # a record written before keys were stated: its key is computed
    path.write_text(json.dumps(edited))
    (loaded,), _ = load_records(tmp_path)
    assert loaded.experiment_key == experiment_key(loaded.experiment()) != stated
