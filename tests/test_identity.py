"""What records pin: weights and tokenizer hashes (streamed, cached, `sha256sum`-compatible), hub revisions read
offline from the cache, data hashes, and reference scores cached per model identity and settings."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

import harness.identity
from harness.identity import (
    data_identity,
    file_sha256,
    files_sha256,
    identity_key,
    model_identities,
    model_identity,
)
from harness.pairs import get_pair
from harness.references import REFERENCE_SAMPLES, published, reference_key
from harness.spec import Execution
from kdcore.scores import TaskScore
from tasks.data import DATA_DIR, expected_checksums


def _model_folder(folder: Path, weights: bytes = b"weights-v1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text('{"model": "bpe"}')
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def test_file_hash_is_streamed_sha256_and_computed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(os.urandom(3 << 20))  # more than one read block
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(harness.identity, "sha256_of", lambda _: pytest.fail("hashed twice"))
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()  # from the (path, size, mtime) cache
    path.write_bytes(b"changed")
    monkeypatch.undo()
    assert file_sha256(path) == hashlib.sha256(b"changed").hexdigest()  # a changed file is hashed again


def test_several_files_hash_like_sha256sum(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "m")
    (folder / "model-00002.safetensors").write_bytes(b"second shard")
    names = ["model.safetensors", "model-00002.safetensors"]
    listing = subprocess.run(["sha256sum", *sorted(names)], cwd=folder, capture_output=True, check=True).stdout
    assert files_sha256(folder, names) == hashlib.sha256(listing).hexdigest()
    assert files_sha256(folder, []) is None


def test_local_model_identity_pins_weights_and_tokenizer(tmp_path: Path) -> None:
    one = model_identity("my/ref", _model_folder(tmp_path / "a"))
    assert one["ref"] == "my/ref" and one["revision"] is None
    assert one["weights_sha256"] == files_sha256(tmp_path / "a", ["model.safetensors"])
    assert one["weights_files"] == {"model.safetensors": hashlib.sha256(b"weights-v1").hexdigest()}
    assert one["tokenizer_sha256"] == files_sha256(tmp_path / "a", ["tokenizer.json", "tokenizer_config.json"])
    other = model_identity("my/ref", _model_folder(tmp_path / "b", b"weights-v2"))
    assert other["weights_sha256"] != one["weights_sha256"] and other["tokenizer_sha256"] == one["tokenizer_sha256"]


def test_hub_model_identity_is_the_cached_snapshot_revision_read_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--model"
    _model_folder(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(socket, "socket", lambda *a, **k: pytest.fail("network used"))
    pinned = model_identity("org/model", "org/model")
    assert pinned == {
        "ref": "org/model",
        "weights_sha256": None,
        "weights_files": None,
        "revision": commit,
        "tokenizer_sha256": files_sha256(repo / "snapshots" / commit, ["tokenizer.json", "tokenizer_config.json"]),
    }
    missing = model_identity("org/absent", "org/absent")
    assert missing["revision"] is None and missing["tokenizer_sha256"] is None  # unpinned, not looked up online


def test_model_identities_name_the_pair_refs(tmp_path: Path) -> None:
    pair = get_pair("tiny")
    found = model_identities(pair, _model_folder(tmp_path / "t"), _model_folder(tmp_path / "s", b"small"))
    assert [found[r]["ref"] for r in ("teacher", "student")] == [pair.teacher, pair.student]


def test_data_identity_reuses_shipped_checksums_and_hashes_generated_splits() -> None:
    from tasks.benchmarks.arith import generate_split

    qwen = data_identity(get_pair("qwen"), limit=50)
    assert qwen["train"] == {
        "task": "gsm8k",
        "split": "train",
        "prompts": 7473,
        "sha256": expected_checksums(DATA_DIR)["gsm8k/train.jsonl"],
        "of": "tasks/data/gsm8k/train.jsonl",
    }
    assert qwen["eval"]["limit"] == 50 and set(qwen["eval"]["tasks"]) == {"gsm8k", "math500", "humaneval"}
    assert qwen["eval"]["tasks"]["math500"]["sha256"] == expected_checksums(DATA_DIR)["math/math500.jsonl"]
    tiny = data_identity(get_pair("tiny"), limit=None)
    lines = "".join(json.dumps(d, sort_keys=True, ensure_ascii=False) + "\n" for d in generate_split("test"))
    assert tiny["eval"]["tasks"]["arith"] == {
        "split": "test",
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
        "of": "records",
    }
    assert tiny["train"]["sha256"] != tiny["eval"]["tasks"]["arith"]["sha256"]


def test_reference_evaluations_are_keyed_by_identity_and_settings_and_published_per_results_dir(tmp_path: Path) -> None:
    model = {"ref": "m", "weights_sha256": "a" * 64, "revision": None, "tokenizer_sha256": "b" * 64}
    key = reference_key(model, {"limit": None})
    assert key == reference_key(dict(model), {"limit": None})
    assert key != reference_key(model, {"limit": 50})  # other settings: another evaluation
    assert key != reference_key(model | {"weights_sha256": "c" * 64}, {"limit": None})  # other weights: another
    folder = tmp_path / "cache" / key
    (folder / "samples").mkdir(parents=True)
    (folder / "samples" / "arith.jsonl").write_text('{"doc_id": 0}\n')
    score = TaskScore(score=0.5, n=1, samples="samples/arith.jsonl")
    for results in (tmp_path / "results", tmp_path / "other-results"):  # each results dir gets its copy of the log
        shown = published(score, folder, results, key)
        assert shown.samples == f"{REFERENCE_SAMPLES}/{key}/arith.jsonl" and (results / shown.samples).is_file()


def test_a_run_records_what_it_compared(mini_tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline hook: a tiny run's record pins both models and the data, and carries the student's own scores,
    evaluated once: a second run of another method reuses the cached reference evaluations."""
    from harness import pipeline
    from harness.models import resolve

    results = tmp_path / "results"
    spec = pipeline.RunSpec(
        pair="tiny", method="hard", train_overrides={"max_steps": 1}, limit=3, execution=Execution(results_dir=results)
    )
    record, _ = pipeline.run(spec)
    student = Path(resolve("builtin:tiny/student"))
    assert record.models["student"].to_dict() == model_identity("builtin:tiny/student", student)
    assert record.models["teacher"].weights_sha256 != record.models["student"].weights_sha256
    assert record.data.to_dict() == data_identity(get_pair("tiny"), 3)
    before = record.student_before_scores["arith"]
    assert before.n == 3 and (results / before.samples).is_file() and before.samples.startswith(REFERENCE_SAMPLES)
    calls: list[str] = []
    from harness import phases

    real = phases._evaluate
    monkeypatch.setattr(phases, "_evaluate", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    again, _ = pipeline.run(pipeline.RunSpec(**{**spec.__dict__, "method": "soft"}))
    assert len(calls) == 1  # only the distilled student: teacher and student-before came from the cache
    assert again.student_before_scores == record.student_before_scores and again.models == record.models


def test_supervision_is_cached_by_the_teacher_s_weights_not_the_path_it_was_read_from(
    mini_tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other weights at the same path get another supervision cache; the same weights in two checkouts share one."""
    first, again = _model_folder(tmp_path / "a"), _model_folder(tmp_path / "b")
    retrained = _model_folder(tmp_path / "c", weights=b"weights-v2")
    keys = [identity_key(model_identity("org/teacher", folder)) for folder in (first, again, retrained)]
    assert keys[0] == keys[1] != keys[2]

    from harness import phases, pipeline
    from harness.accounting import CostLedger
    from harness.resume import RunState
    from harness.spec import RunSpec

    spec = RunSpec(pair="tiny", method="soft", train_overrides={"max_steps": 2}, limit=2)
    ctx = pipeline.context(spec, RunState.begin(tmp_path / "state", lambda: "run"), CostLedger())
    asked = []
    monkeypatch.setattr(
        phases, "load_or_build_supervision", lambda _pair, key, *_, **__: asked.append(key) or (None, None)
    )
    phases.Supervise()._load(ctx, (0, 1))
    assert asked == [identity_key(ctx.models["teacher"])] and str(ctx.teacher_ref) not in asked[0]
