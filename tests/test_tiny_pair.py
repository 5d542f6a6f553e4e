"""The tiny pair: shipped weights checked against their pinned sha256, servable by vLLM's CPU attention, with the
headroom distillation needs; the recipe is deterministic; `harness run --pair tiny` end to end.

The end-to-end runs use a miniature spec (`mini_tiny` in conftest: a few training steps, built into the test
cache) so they take seconds; the shipped pair's scores are measured by the README's commands.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from harness import tiny
from harness.cli import main
from harness.models import load_model, resolve
from harness.pairs import get_pair
from kdcore.errors import HarnessError
from tasks import load_task
from tasks.generation import render_prompt


def test_builtin_refs_resolve_to_the_shipped_files_and_their_pinned_sha256() -> None:
    assert resolve("builtin:tiny/teacher") == str(tiny.SHIPPED_DIR / "teacher")
    assert resolve("builtin:tiny/student") == str(tiny.SHIPPED_DIR / "student")
    assert tiny.pair_checksums(tiny.SHIPPED_DIR) == get_pair("tiny").sha256
    assert json.loads((tiny.SHIPPED_DIR / "spec.json").read_text()) == json.loads(
        json.dumps(tiny.asdict(tiny.SHIPPED_SPEC))
    )


@pytest.mark.parametrize("damage", ["weights", "tokenizer", "missing"])
def test_a_changed_shipped_file_is_refused_in_one_line(damage: str, tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny.SHIPPED_DIR, copy)
    monkeypatch.setattr(tiny, "SHIPPED_DIR", copy)
    assert tiny.ensure_tiny_pair() == copy  # intact: accepted
    if damage == "missing":
        (copy / "student" / tiny.WEIGHTS_FILE).unlink()
        expected = f"shipped tiny pair file missing: {copy / 'student' / tiny.WEIGHTS_FILE}"
    else:
        role, name = ("teacher", tiny.WEIGHTS_FILE) if damage == "weights" else ("student", "chat_template.jinja")
        path = copy / role / name
        path.write_bytes(path.read_bytes() + b" ")
        expected = f"shipped tiny pair {'teacher' if damage == 'weights' else 'tokenizer'} in {copy / role} has sha256 "
    with pytest.raises(HarnessError) as err:
        resolve("builtin:tiny/teacher")
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_shipped_models_are_servable_by_vllm_cpu_attention() -> None:
    sizes = {}
    for role in tiny.ROLES:
        config = AutoConfig.from_pretrained(tiny.SHIPPED_DIR / role)
        assert config.hidden_size // config.num_attention_heads in (32, 64)
        sizes[role] = sum(t.numel() for t in load_file(tiny.SHIPPED_DIR / role / tiny.WEIGHTS_FILE).values())
    assert sizes["student"] < sizes["teacher"] / 3


def test_shipped_pair_has_the_headroom_distillation_needs() -> None:
    """On the first 50 held-out problems, greedy: the teacher solves nearly all, the student before distillation
    few (full-set figures, measured with `harness eval`, are in the README)."""
    task, right = load_task("arith"), {}
    docs = task.docs("test")[:50]
    for role in tiny.ROLES:
        model, tokenizer = load_model(f"builtin:tiny/{role}")
        prompts = [render_prompt(tokenizer, task.prompt(doc)) for doc in docs]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=task.max_new_tokens, do_sample=False)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        right[role] = sum(task.score(doc, text) for doc, text in zip(docs, texts, strict=True))
    assert right["teacher"] >= 44 and right["student"] <= 18, right


def test_the_recipe_is_deterministic(mini_tiny, tmp_path: Path, monkeypatch, capsys) -> None:
    """`harness build-tiny` twice gives the same bytes and prints the checksums pairs.toml pins; a non-shipped
    spec is built once into the cache and reused."""
    monkeypatch.setattr(tiny, "SHIPPED_SPEC", mini_tiny)
    sums = []
    for name in ("a", "b"):
        monkeypatch.setattr(sys, "argv", ["harness", "build-tiny", "--out", str(tmp_path / name)])
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 0
        sums.append(tiny.pair_checksums(tmp_path / name))
        assert 'teacher = "' + sums[-1]["teacher"] + '"' in capsys.readouterr().out
    assert sums[0] == sums[1]
    monkeypatch.setattr(tiny, "SHIPPED_SPEC", tiny.TinySpec())
    first = tiny.ensure_tiny_pair()
    assert first.parent == tiny.cache_root() / "tiny" and tiny.ensure_tiny_pair() == first  # cached: no rebuild
    assert tiny.pair_checksums(first) == sums[0]


METHOD_ARGS = {"gkd": ["--param", "lmbda=1"], "hybrid-gkd": ["--param", "lmbda=1"], "soft": ["--div", "jsd"]}


@pytest.mark.parametrize("method", ["sft", "hard", "soft", "hybrid", "gkd", "hybrid-gkd"])
def test_harness_run_tiny_end_to_end(mini_tiny, method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    args = ["run", "--method", method, "--pair", "tiny", "--max-steps", "2", "--limit", "4"]
    monkeypatch.setattr(sys, "argv", ["harness", *args, "--results-dir", str(results), *METHOD_ARGS.get(method, [])])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    (record_path,) = (results / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["method"] == method and record["scores"]["arith"]["n"] == 4
    if method.endswith("gkd"):  # on-policy: every micro-batch was sampled by the student itself (lmbda=1)
        assert record["training"]["on_policy_batches"] == 2
    if method == "sft":  # no teacher: no supervision phase
        assert "supervise" not in record["cost"]["phases"]
    if method.endswith("gkd"):  # on-policy: every micro-batch was sampled by the student itself (lmbda=1)
        assert record["training"]["on_policy_batches"] == 2
    if method == "sft":  # no teacher: no supervision phase
        assert "supervise" not in record["cost"]["phases"]
    assert record["cost"]["phases"]["train"]["device_hours"] > 0
    for scores in ("scores", "teacher_scores", "student_before_scores"):  # the generators report finish reasons
        assert 0.0 <= record[scores]["arith"]["metrics"]["truncated"] <= 1.0
    if "supervise" in record["cost"]["phases"]:  # the trace filter's counts, summed over the supervision's shards
        traces = record["training"]["supervision_traces"]
        left_out = traces["empty"] + traces["truncated"] + traces["incorrect"]
        assert traces["total"] == get_pair("tiny").train_prompts == left_out + traces["kept"] and traces["kept"] > 0
    else:
        assert "supervision_traces" not in record["training"]
    samples = (results / record["scores"]["arith"]["samples"]).read_text().splitlines()
    assert len(samples) == 4 and {"prompt", "completion", "score"} <= set(json.loads(samples[0]))
    board = (results / "leaderboard.md").read_text()
    assert method in board
    if method == "hybrid":  # colour the run's outputs by the teacher-estimated bridge risk
        rows = [json.loads(line) for line in samples]
        rows[0]["completion"] = "2 + 3 = 5\n#### 5"  # a mini student may stop at once; make one output non-empty
        (results / record["scores"]["arith"]["samples"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
        monkeypatch.setattr(
            sys,
            "argv",
            [
                "harness",
                "analyze",
                "--pair",
                "tiny",
                "--run",
                str(record_path),
                "--results-dir",
                str(results),
                "--out",
                str(tmp_path / "analysis"),
                "--limit",
                "2",
            ],
        )
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 0
        page = (tmp_path / "analysis" / f"{record_path.stem}-risk.html").read_text()
        assert page.count("arith #") == sum(1 for row in rows[:2] if row["completion"]) >= 1


def test_lora_run_saves_a_merged_student(mini_tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    args = ["run", "--method", "hybrid", "--pair", "tiny", "--max-steps", "3", "--limit", "2", "--lora-r", "4"]
    monkeypatch.setattr(sys, "argv", ["harness", *args, "--lr", "0.05", "--results-dir", str(results)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    (record_path,) = (results / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["train_config"]["lora_r"] == 4
    trained = load_file(results / "models" / record["run_id"] / "model.safetensors")
    initial = load_file(tiny.ensure_tiny_pair() / "student" / "model.safetensors")
    assert trained.keys() == initial.keys()  # merged: a plain model, no adapter weights
    changed = [k for k in initial if not torch.equal(initial[k], trained[k])]
    assert changed and all("embed" not in k and "norm" not in k for k in changed)  # only the linear layers moved
