"""The benchmark scripts' building blocks: competitors compute the same loss, the cache size is what the format says,
and repetitions are interleaved. No timings are asserted."""

from __future__ import annotations

import copy
import json
from argparse import Namespace

import torch

from bench.common import StepClock, interleaved, random_llama
from bench.method_cost import budget_pairs_file, fit_line, modelled_ratio
from bench.supervision_throughput import soft_label_agreement
from bench.topk_cache import CACHE_KS, cache_bytes_per_token
from bench.train_throughput import check_losses_agree, labelled, main, make_examples, trl_trainer
from harness.pairs import get_pair

torch.set_num_threads(1)


def test_interleaved_rotates_who_goes_first_and_keeps_every_sample() -> None:
    calls: list[str] = []

    def competitor(name: str):
        def run() -> list[str]:
            calls.append(name)
            return [f"{name}{len(calls)}"]

        return run

    samples = interleaved({"a": competitor("a"), "b": competitor("b"), "c": competitor("c")}, reps=3)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {name: len(values) for name, values in samples.items()} == {"a": 3, "b": 3, "c": 3}


def test_step_clock_drops_the_warm_up_step() -> None:
    clock = StepClock()
    for _ in range(4):
        clock.tick()
    steps = clock.step_seconds(skip=1)
    assert len(steps) == 2
    assert all(wall >= 0 and cpu >= 0 for wall, cpu in steps)


def test_labels_mark_exactly_the_completion_tokens() -> None:
    examples = make_examples(2, prompt_len=3, completion_len=4, vocab=50, seed=0)
    inputs = labelled(examples)
    for row, example in enumerate(examples):
        assert inputs["labels"][row, :3].eq(-100).all()
        assert inputs["labels"][row, 3:].tolist() == example["completion_ids"]


def test_trl_plain_and_our_online_losses_agree(tmp_path) -> None:
    """The throughput benchmark compares like with like: TRL's GKD (beta=0), the plain loop and our soft fkl."""
    student = random_llama(64, 16, 1, 2, 32, seed=0)
    teacher = random_llama(64, 32, 1, 2, 64, seed=1).eval().requires_grad_(False)
    examples = make_examples(8, prompt_len=5, completion_len=7, vocab=64, seed=0)
    args = Namespace(batch=4, lr=1e-4, steps=1, seed=0)
    trainer, _ = trl_trainer(copy.deepcopy(student), teacher, examples, args, tmp_path)
    assert check_losses_agree(student, teacher, trainer, examples, args) < 1e-6


def test_cache_bytes_per_token_match_the_format(tmp_path) -> None:
    """int32 ids + float16 log-probs with a tail bucket: 6k + 2 bytes a token, plus offsets and a small header."""
    sizes = cache_bytes_per_token(vocab=500, tokens=2048, folder=tmp_path)
    assert sorted(sizes) == sorted(CACHE_KS)
    for k, size in sizes.items():
        assert 6 * k + 2 <= size < 6 * k + 2 + 1


def test_throughput_json_holds_the_floor_ratios(tmp_path) -> None:
    """--quick runs every competitor on tiny shapes; the JSON has the ratios the issue asks for (shape only)."""
    out = tmp_path / "throughput.json"
    main(["--quick", "--json", str(out)])
    result = json.loads(out.read_text())
    expected = {
        "offline_soft_over_sft",
        "offline_hybrid_over_sft",
        "online_soft_over_sft_plus_teacher",
        "online_soft_speedup_vs_trl",
    }
    assert expected <= set(result["ratios"])
    assert all(isinstance(value, float) for value in result["ratios"].values())
    assert {"ours sft", "teacher forward", "ours soft topk", "ours soft online", "trl gkd"} <= set(result["steps"])


def test_budget_pairs_file_is_the_tiny_pair_with_another_budget(tmp_path) -> None:
    """method_cost's completion budgets: the teacher's and gkd's budget change, every other setting is the pair's."""
    shipped = get_pair("tiny")
    pair = get_pair("tiny", budget_pairs_file(12, tmp_path))
    assert (pair.max_new_tokens, pair.supervision.max_new_tokens) == (12, 12)
    assert shipped.max_new_tokens != 12
    assert pair.trace_filter == shipped.trace_filter  # set in a table of its own, further down the shipped file
    assert (pair.teacher, pair.student, pair.train, pair.published) == (
        shipped.teacher,
        shipped.student,
        shipped.train,
        shipped.published,
    )


def test_linear_fit_and_modelled_ratio() -> None:
    intercept, slope = fit_line([10.0, 20.0, 40.0], [3.0, 5.0, 9.0])
    assert abs(intercept - 1.0) < 1e-12 and abs(slope - 0.2) < 1e-12
    fits = {"supervise": (100.0, 1.0), "hybrid_train_per_step": (1.0, 0.0), "gkd_train_per_step": (2.0, 0.1)}
    # at 50 tokens: gkd 10 x (2 + 5) = 70 over hybrid 150 + 10 x 1 = 160
    assert abs(modelled_ratio(fits, 10, 50.0) - 70 / 160) < 1e-12


def test_soft_label_agreement_compares_identical_completions_only() -> None:
    row = {"completion": [5, 1], "ids": [[3, 4], [1, 2]], "logprobs": [[-0.1, -3.0, -5.0], [-0.01, -6.0, -7.0]]}
    swapped = {**row, "ids": [[3, 4], [2, 1]], "logprobs": [[-0.1, -3.0, -5.0], [-6.0, -0.03, -7.0]]}
    other = {**row, "completion": [6, 1]}
    found = soft_label_agreement([row, row], [swapped, other])
    assert found["prompts"] == 2 and found["completions_identical"] == 1
    assert (found["positions"], found["topk_rows_identical"]) == (2, 1)
    assert abs(found["max_abs_logprob_diff"] - 0.02) < 1e-12  # id 1: -0.01 vs -0.03, matched by id
    assert found["max_abs_tail_mass_diff"] == 0.0
