"""TEST DATA ONLY: realistic but invented run records and per-sample logs for the leaderboard and compare tests.

Nothing here is a measured result. Writes only into the directory it is given (a pytest tmp dir).
Two pairs: `tiny` (CPU; hard, soft, hybrid, gkd with two seeds each; teacher supervision cached and
reused; per-sample logs for every run and for the teacher's and the student's own evaluations) and `qwen`
(H100; two benchmarks; hybrid in two settings, gkd; no per-sample logs). Records are schema 2, pinned to
invented identities (`models`, `data`); `build` picks another build of the same pair name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import cache_key
from harness.record_parts import DataPin, ModelPin, RunCost, TrainingSummary
from harness.records import RunRecord, write_record
from kdcore.scores import TaskScore

ARITH_DOCS = 200
SUPERVISE_TINY = {"key": "sup-tiny-0123", "hours": 0.024}  # one teacher-supervision build on the tiny pair
SUPERVISE_QWEN = {"key": "sup-qwen-4567", "hours": 3.2}

# (pair, method, seed) -> mean accuracy per task; invented.
ACCURACY = {
    ("tiny", "hard", 0): {"arith": 0.215},
    ("tiny", "hard", 1): {"arith": 0.235},
    ("tiny", "soft", 0): {"arith": 0.255},
    ("tiny", "soft", 1): {"arith": 0.265},
    ("tiny", "hybrid", 0): {"arith": 0.300},
    ("tiny", "hybrid", 1): {"arith": 0.320},
    ("tiny", "gkd", 0): {"arith": 0.310},
    ("tiny", "gkd", 1): {"arith": 0.330},
}
QWEN_ACCURACY = {
    ("hybrid", 0.5, 0): {"gsm8k": 0.612, "humaneval": 0.402},
    ("hybrid", 0.5, 1): {"gsm8k": 0.622, "humaneval": 0.390},
    ("hybrid", 0.2, 0): {"gsm8k": 0.590, "humaneval": 0.415},
    ("gkd", None, 0): {"gsm8k": 0.630, "humaneval": 0.410},
}
TEACHER = {"tiny": {"arith": 0.68}, "qwen": {"gsm8k": 0.86, "humaneval": 0.61}}
BEFORE = {"tiny": {"arith": 0.12}, "qwen": {"gsm8k": 0.45, "humaneval": 0.30}}
DOCS = {"arith": ARITH_DOCS, "gsm8k": 500, "humaneval": 164}


def fake_sha(*parts: object) -> str:
    """An invented sha256 (of the parts' text): stands for a file hash in the fake identities."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def models(pair: str, build: str = "a") -> dict[str, dict[str, object]]:
    """A record's `models` as harness.identity.model_identities writes them, for an invented build."""
    return {
        role: {
            "ref": f"{pair}-{role}",
            "weights_sha256": fake_sha(pair, role, build),
            "weights_files": {"model.safetensors": fake_sha(pair, role, build)},
            "revision": None,
            "tokenizer_sha256": fake_sha(pair, "tokenizer"),
        }
        for role in ("teacher", "student")
    }


def data(pair: str, limit: int | None = None) -> dict[str, object]:
    """A record's `data` as harness.identity.data_identity writes it."""
    tasks = sorted(TEACHER[pair])
    return {
        "train": {
            "task": tasks[0],
            "split": "train",
            "prompts": 1000,
            "sha256": fake_sha(pair, "train"),
            "of": "records",
        },
        "eval": {
            "limit": limit,
            "dtype": "float32",
            "chat_template": "model",
            "chat_template_kwargs": {},
            "tasks": {t: {"split": "test", "sha256": fake_sha(t, "test"), "of": "records"} for t in tasks},
        },
    }


def phase(hours: float, device: str = "cpu", *, reused: bool = False, cache_key: str | None = None) -> dict[str, Any]:
    """A phase cost as harness.accounting.PhaseCost.to_dict writes it."""
    return {
        "wall_s": hours * 3600.0,
        "devices": 1,
        "device": device,
        "device_hours": hours,
        "tokens": int(hours * 1e7),
        "flops": hours * 1e15,
        "peak_memory_bytes": 2**28,
        "reused": reused,
        "cache_key": cache_key,
    }


def cost(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A record's `cost` as JSON (harness.record_parts.RunCost.to_dict)."""
    return {
        "phases": phases,
        "total_device_hours": sum(p["device_hours"] for p in phases.values()),
        "fresh_device_hours": sum(p["device_hours"] for p in phases.values() if not p["reused"]),
        "wall_s": sum(p["wall_s"] for p in phases.values() if not p["reused"]),
    }


def doc_scores(mean: float, n: int, seed: int) -> np.ndarray:
    """n per-doc 0/1 scores with exactly round(mean * n) ones, placed by `seed`."""
    scores = np.zeros(n)
    scores[np.random.default_rng(seed).permutation(n)[: round(mean * n)]] = 1.0
    return scores


def write_samples(
    results_dir: Path, run_id: str, task: str, scores: np.ndarray, doc_ids: list[int] | None = None
) -> str:
    """Write a per-sample log like the evaluation phase does; return its path relative to results_dir."""
    rel = f"samples/{run_id}/{task}.jsonl"
    path = results_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    doc_ids = list(range(len(scores))) if doc_ids is None else doc_ids
    with path.open("w") as handle:
        for doc_id, score in zip(doc_ids, scores, strict=True):
            line = {
                "doc_id": doc_id,
                "prompt": f"Q{doc_id}: what is {doc_id} + 3?",
                "completion": f"#### {doc_id + 3 if score else doc_id}",
                "extracted": str(doc_id + 3 if score else doc_id),
                "score": float(score),
                "metrics": {"exact_match": float(score)},
            }
            handle.write(json.dumps(line) + "\n")
    return rel


def make_record(
    pair: str,
    method: str,
    seed: int,
    scores: dict[str, TaskScore],
    phases: dict[str, dict[str, Any]],
    *,
    method_params: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    build: str = "a",
    teacher_scores: dict[str, TaskScore] | None = None,
    before_scores: dict[str, TaskScore] | None = None,
) -> RunRecord:
    """A schema-2 record of build `build`, with a fixed creation time and run id, so fixtures are reproducible."""
    limit = (train_config or {}).get("limit")
    return RunRecord(
        pair=pair,
        method=method,
        seed=seed,
        method_params=method_params or {"temperature": 1.0},
        train_config={"max_steps": 200, "lr": 1e-3, "seed": seed, **(train_config or {})},
        teacher=f"{pair}-teacher",
        student=f"{pair}-student",
        scores=scores,
        teacher_scores=teacher_scores
        or {t: TaskScore(score=s, n=DOCS[t]) for t, s in TEACHER.get(pair, TEACHER["tiny"]).items()},
        student_before_scores=before_scores
        or {t: TaskScore(score=s, n=DOCS[t]) for t, s in BEFORE.get(pair, BEFORE["tiny"]).items()},
        models={role: ModelPin.from_dict(pin, role) for role, pin in models(pair, build).items()},
        data=DataPin.from_dict(data(pair if pair in TEACHER else "tiny", limit)),
        cost=RunCost.from_dict(cost(phases)),
        environment={"code_version": "0" * 40, "packages": {}, "python": "3.11.7", "device": "cpu", "device_count": 1},
        training=TrainingSummary(steps=200),
        run_id=f"{pair}-{method}-s{seed}-20261122T120000Z-{cache_key([pair, method, method_params, seed, build])[:6]}",
        created="2026-11-22T12:00:00Z",
    )


def reference_scores(results_dir: Path, pair: str, build: str = "a") -> tuple[dict[str, TaskScore], ...]:
    """The teacher's and the student-before's scores with per-sample logs, as harness.references publishes them."""
    out = []
    for role, table in (("teacher", TEACHER), ("before", BEFORE)):
        scores = {}
        for task, mean in table[pair].items():
            key = fake_sha(pair, role, build)[:16]
            rel = write_samples(results_dir, f"references/{key}", task, doc_scores(mean, DOCS[task], 99))
            scores[task] = TaskScore(score=mean, n=DOCS[task], samples=rel)
        out.append(scores)
    return tuple(out)


def tiny_records(results_dir: Path) -> list[RunRecord]:
    """Tiny pair: hard builds the supervision cache (seed 0); soft, hybrid and hard seed 1 reuse it; gkd is
    on-policy (no supervision phase, a costlier training phase)."""
    records = []
    teacher, before = reference_scores(results_dir, "tiny")
    for (pair, method, seed), accuracy in sorted(ACCURACY.items()):
        phases = {}
        if method != "gkd":
            builder = method == "hard" and seed == 0
            phases["supervise"] = phase(SUPERVISE_TINY["hours"], reused=not builder, cache_key=SUPERVISE_TINY["key"])
        phases["train"] = phase(0.060 if method == "gkd" else 0.010 + 0.001 * seed)
        phases["evaluate"] = phase(0.002)
        record = make_record(pair, method, seed, {}, phases, teacher_scores=teacher, before_scores=before)
        for task, mean in accuracy.items():
            rel = write_samples(results_dir, record.run_id, task, doc_scores(mean, ARITH_DOCS, seed))
            record.scores[task] = TaskScore(score=mean, n=ARITH_DOCS, samples=rel)
        records.append(record)
    return records


def qwen_records() -> list[RunRecord]:
    """A 'qwen' pair on H100 with two benchmarks; hybrid in two settings (alpha 0.5 and 0.2)."""
    records = []
    for (method, alpha, seed), accuracy in QWEN_ACCURACY.items():
        phases = {}
        if method == "hybrid":
            builder = alpha == 0.5 and seed == 0
            phases["supervise"] = phase(
                SUPERVISE_QWEN["hours"], "NVIDIA H100", reused=not builder, cache_key=SUPERVISE_QWEN["key"]
            )
        phases["train"] = phase(12.0 if method == "gkd" else 1.5, "NVIDIA H100")
        phases["evaluate"] = phase(0.25, "NVIDIA H100")
        params = {"alpha": alpha, "temperature": 1.0} if alpha is not None else {"beta": 0.5, "lmbda": 1.0}
        scores = {t: TaskScore(score=s, n=500) for t, s in accuracy.items()}
        records.append(make_record("qwen", method, seed, scores, phases, method_params=params))
    return records


def write_fake_results(results_dir: Path) -> list[RunRecord]:
    """Write all fake records (and the tiny pair's per-sample logs) under results_dir; return them."""
    records = tiny_records(results_dir) + qwen_records()
    for record in records:
        write_record(record, results_dir)
    return records
