"""Bad input gives one clear message and loses nothing: no chat template, prompts longer than max_length, empty
completions, a full disk while writing a record. (A NaN loss: test_resume; an unreadable or half-written
cache shard: test_supervision_shards.)"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import harness.pipeline  # noqa: F401  (imported before a test patches harness.models, so it binds the real loaders)
from harness.cli import main
from harness.pairs import get_pair
from harness.supervise import SupervisionSettings, build_supervision, pair_renderer, prompt_ids
from tasks import load_task
from tasks.evaluate import evaluate_task
from tasks.generation import Completion
from tests.tiny_models import tiny_tokenizer
from tests.tiny_training import synthetic_examples, tiny_student
from trainers.batch import collate
from trainers.loop import TrainConfig, train
from trainers.objectives import load_method


def test_a_tokenizer_without_chat_template_gives_plain_text_with_a_warning(caplog) -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    render = pair_renderer(get_pair("tiny"), tokenizer)
    assert render([{"role": "user", "content": "What is 2 + 3?"}]) == "What is 2 + 3?\n"
    assert "pair 'tiny': tokenizer" in caplog.text and "has no chat template; prompts are plain text" in caplog.text


def test_prompts_longer_than_max_length_are_skipped_and_counted(caplog) -> None:
    tokenizer, task = tiny_tokenizer(), load_task("arith")
    pair = get_pair("tiny")
    everything = prompt_ids(pair, task, tokenizer)
    limit = sorted(len(p) for p in everything)[len(everything) // 2]  # about half of the prompts are too long
    short = [p for p in everything if len(p) < limit]
    kept = prompt_ids(SimpleNamespace(**{**vars(pair), "max_length": limit}), task, tokenizer)
    assert kept == short and 0 < len(kept) < len(everything)
    assert f"{len(everything) - len(kept)} of {len(everything)} distillation prompts are {limit} tokens or longer" in (
        caplog.text
    )


def test_examples_longer_than_max_length_keep_the_prompt_and_the_completion_that_fits(caplog) -> None:
    long = {"prompt_ids": [5] * 5, "completion_ids": [7, 8, 9, 10, 11, 12, 13, 1], "topk_ids": [[3, 4]] * 8}
    long["topk_logprobs"] = [[-0.1, -2.0]] * 8
    short = {"prompt_ids": [5, 6], "completion_ids": [7, 1], "topk_ids": [[3, 4]] * 2, "topk_logprobs": [[0.0, -9]] * 2}
    batch = collate([long, short], pad_id=0, max_length=9)
    assert batch.targets.tolist() == [7, 8, 9, 10, 7, 1]
    assert batch.topk_ids.shape == (6, 2) and batch.attention_mask.sum(1).tolist() == [9, 4]
    train(tiny_student(), load_method("hard"), synthetic_examples(), TrainConfig(max_steps=1, max_length=8), pad_id=0)
    examples = synthetic_examples()
    too_long = sum(len(e["prompt_ids"]) + len(e["completion_ids"]) > 8 for e in examples)
    assert f"{too_long} of {len(examples)} training examples are longer than max_length=8" in caplog.text


class ScriptedGenerator:
    """Answers with fixed completions: a fault injected where a real model would rarely produce one."""

    def __init__(self, answers: list, model=None, vocab_rows: int = 0) -> None:
        self.answers, self.model, self.vocab_rows = answers, model, vocab_rows

    def generate_ids(self, prompt_ids, sampling):
        return self.answers

    def generate(self, prompts, sampling):
        return [[Completion(answer, ended=True)] for answer in self.answers]


def test_an_empty_teacher_completion_is_left_out_and_counted(caplog) -> None:
    prompts, answers = [[5, 6, 7], [8, 9], [10, 11, 12]], [[13, 1], [], [14, 15, 1]]
    data = build_supervision(
        ScriptedGenerator(answers, tiny_student(), vocab_rows=40),
        prompts,
        max_new_tokens=4,
        settings=SupervisionSettings(top_k=4),
        pad_id=0,
        eos_id=1,
    )
    assert data["prompt_ids"] == [prompts[0], prompts[2]] and data["completion_ids"] == [answers[0], answers[2]]
    assert "1 of 3 teacher completions are empty and are left out" in caplog.text


def test_an_empty_completion_in_evaluation_is_scored_wrong_and_counted(tmp_path: Path, caplog) -> None:
    score = evaluate_task(
        load_task("arith"), ScriptedGenerator(["", "#### 3", ""]), str, limit=3, samples_path=tmp_path / "a.jsonl"
    )
    assert score.n == 3 and len((tmp_path / "a.jsonl").read_text().splitlines()) == 3
    assert "arith: 2 of 3 completions are empty (scored as wrong, kept in the log)" in caplog.text


@pytest.mark.slow
def test_a_full_disk_while_writing_the_record_keeps_nothing_half_written(
    mini_tiny, tmp_path: Path, monkeypatch, capsys
) -> None:
    real_fsync, results = os.fsync, tmp_path / "results"

    def fsync(fd: int) -> None:
        if "/runs/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    args = ["harness", "run", "--method", "hard", "--max-steps", "2", "--limit", "4", "--results-dir", str(results)]
    monkeypatch.setattr(sys, "argv", args)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 1
    message = capsys.readouterr().err
    assert "no space left on device writing" in message and "/runs/" in message and "nothing half-written" in message
    assert not list((results / "runs").iterdir())  # no record, and no temporary file either

    monkeypatch.setattr(os, "fsync", real_fsync)
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    (record,) = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    assert record["attempts"] == 2 and record["training"]["resumed_from"] == 2  # training was not done again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "--max-steps", "0"), "--max-steps 0: must be a positive integer"),
        (("run", "--max-steps", "-3"), "--max-steps -3: must be a positive integer"),
        (("run", "--batch-size", "0"), "--batch-size 0: must be a positive integer"),
        (("run", "--lr", "-0.1"), "--lr -0.1: must be a positive number"),
        (("run", "--limit", "0"), "--limit 0: must be a positive number of docs"),
        (("run", "--supervision-temperature", "-1"), "--supervision-temperature -1.0: must be a number >= 0"),
        (("sweep", "--max-steps", "-1"), "--max-steps -1: must be a positive integer"),
        (("sweep", "--limit", "-2"), "--limit -2: must be a positive number of docs"),
        (("eval", "--model", "builtin:tiny/student", "--limit", "0"), "--limit 0: must be a positive number of docs"),
        (
            ("run", "--method", "soft", "--param", "div_params=x"),
            "parameter 'div_params' of SoftParams: 'x' is not allowed; allowed: dict",
        ),
        (("run", "--param", "alpha=high"), "parameter 'alpha' of HybridParams: 'high' is not allowed"),
        (("run", "--param", "alpha=true"), "parameter 'alpha' of HybridParams: True is not allowed"),
        (
            ("run", "--method", "gkd", "--param", "max_new_tokens=1.5"),
            "parameter 'max_new_tokens' of GKDParams: 1.5 is not allowed; allowed: int in [1, inf) or null",
        ),
        (
            ("sweep", "--methods", "hard,hybrid", "--param", "weighting=3"),
            "parameter 'weighting' of HybridParams: 3 is not allowed",
        ),
    ],
)
def test_bad_run_settings_stop_before_any_model_loads_and_write_nothing(
    args: tuple[str, ...], message: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    import harness.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(harness.models, "load_model", no_model)
    monkeypatch.setattr(harness.models, "resolve", no_model)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    out = ["--out", str(tmp_path / "results")] if args[0] == "eval" else ["--results-dir", str(tmp_path / "results")]
    monkeypatch.setattr(sys, "argv", ["harness", *args, *out])
    with pytest.raises(SystemExit) as done:
        main()
    output = capsys.readouterr()
    assert done.value.code == 2
    assert message in output.out + output.err and len((output.out + output.err).strip().splitlines()) == 1
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
