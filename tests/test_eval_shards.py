"""Evaluation in pieces: resumed from its partial log after a crash, or split into shards and merged; either way
the same per-sample log and score as one uninterrupted evaluation (miniature tiny student, real generation)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.models import load_model, resolve
from harness.pairs import get_pair
from harness.supervise import pair_renderer
from kdcore.errors import HarnessError
from tasks import evaluate, load_task
from tasks.transformers_backend import TransformersGenerator


class CountingGenerator(TransformersGenerator):
    """Counts the prompts it generates for, and fails on call number `fail_on` (1-based) when given."""

    def __init__(self, *args, fail_on: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prompts, self.calls, self.fail_on = 0, 0, fail_on

    def generate(self, prompts, sampling):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("device lost")
        self.prompts += len(prompts)
        return super().generate(prompts, sampling)


@pytest.fixture
def student(mini_tiny, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(evaluate, "EVAL_CHUNK", 3)
    pair = get_pair("tiny")
    model, tokenizer = load_model(resolve(pair.student), pair.dtype, pair.model_kwargs)
    return pair, model, tokenizer


def run_eval(student, path: Path, generator: TransformersGenerator, key: str | None = "k"):
    pair, _, tokenizer = student
    return evaluate.evaluate_task(
        load_task("arith"),
        generator,
        pair_renderer(pair, tokenizer),
        limit=8,
        samples_path=path,
        resume_key=key,
    )


def test_a_crashed_evaluation_generates_only_the_missing_docs(student, tmp_path: Path) -> None:
    _, model, tokenizer = student
    reference = run_eval(student, tmp_path / "ref.jsonl", TransformersGenerator(model, tokenizer), key=None)
    path = tmp_path / "arith.jsonl"
    with pytest.raises(RuntimeError, match="device lost"):
        run_eval(student, path, CountingGenerator(model, tokenizer, fail_on=2))
    partial = path.with_name("arith.jsonl.partial")
    assert len(partial.read_text().splitlines()) == 1 + 3 and not path.exists()  # header + the first chunk

    with partial.open("a") as handle:  # and the process died while writing a row
        handle.write('{"doc_id": 3, "prom')
    resumed = CountingGenerator(model, tokenizer)
    score = run_eval(student, path, resumed)
    assert resumed.prompts == 5 and not partial.exists()
    assert path.read_text() == (tmp_path / "ref.jsonl").read_text()
    assert (score.score, score.n, score.metrics) == (reference.score, 8, reference.metrics)

    other = CountingGenerator(model, tokenizer)
    with pytest.raises(RuntimeError):  # a partial log written for another model is not reused
        run_eval(student, tmp_path / "x.jsonl", CountingGenerator(model, tokenizer, fail_on=2), key="model-a")
    run_eval(student, tmp_path / "x.jsonl", other, key="model-b")
    assert other.prompts == 8


def _edit_completion(line: str) -> str:
    entry = json.loads(line)
    entry["row"]["completion"] += " 7"
    return json.dumps(entry)


@pytest.mark.parametrize(
    "damage",
    [
        lambda line: "{}",
        _edit_completion,
        lambda line: line.replace('"doc_id": 1', '"doc_id": "1"'),
        lambda line: "\x00",
    ],
    ids=["empty-object", "edited-row", "doc-id-string", "garbage"],
)
def test_a_damaged_partial_row_and_those_after_it_are_generated_again(student, tmp_path: Path, caplog, damage) -> None:
    _, model, tokenizer = student
    run_eval(student, tmp_path / "ref.jsonl", TransformersGenerator(model, tokenizer), key=None)
    path = tmp_path / "arith.jsonl"
    with pytest.raises(RuntimeError, match="device lost"):
        run_eval(student, path, CountingGenerator(model, tokenizer, fail_on=2))
    partial = path.with_name("arith.jsonl.partial")
    header, first, second, third = partial.read_text().splitlines()
    partial.write_text("\n".join([header, first, damage(second), third]) + "\n")
    resumed = CountingGenerator(model, tokenizer)
    run_eval(student, path, resumed)
    assert resumed.prompts == 7  # doc 0 kept; docs 1 and 2 (the damaged row and the one after it) and 3-7 generated
    assert path.read_text() == (tmp_path / "ref.jsonl").read_text()
    (line,) = [r.getMessage() for r in caplog.records if "partial" in r.getMessage()]
    assert line.startswith(f"partial evaluation log {partial}: line 3 is damaged (") and "\n" not in line
    assert "it and the 1 row(s) after it are generated again" in line


def eval_cli(monkeypatch: pytest.MonkeyPatch, model: str, out: Path, *extra: str) -> None:
    args = ["harness", "eval", "--model", model, "--tasks", "arith", "--limit", "10", "--out", str(out), *extra]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0


def test_sharded_evaluation_merges_into_the_unsharded_result(student, tmp_path: Path, monkeypatch) -> None:
    model = resolve(get_pair("tiny").student)
    eval_cli(monkeypatch, model, tmp_path / "whole")
    for shard in ("1/2", "0/2"):
        eval_cli(monkeypatch, model, tmp_path / "sharded", "--shard", shard)
    shard_logs = sorted((tmp_path / "sharded" / "samples").glob("arith.shard-*"))
    ids = [[json.loads(line)["doc_id"] for line in log.read_text().splitlines()] for log in shard_logs]
    assert ids == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9]]  # chunks of 3 docs, dealt round-robin
    eval_cli(monkeypatch, model, tmp_path / "sharded", "--merge")
    for name in ("scores.json", "samples/arith.jsonl"):
        assert (tmp_path / "sharded" / name).read_text() == (tmp_path / "whole" / name).read_text()


def test_merge_refuses_an_incomplete_set_of_shards(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "arith.shard-0-of-3.jsonl").write_text("")
    with pytest.raises(HarnessError, match=r"arith: shard\(s\) 1/3, 2/3 not finished"):
        evaluate.merge_shards(samples, "arith", tmp_path)
