"""The transformers generation backend: prompts longer than the context are cut from the left, not fatal; each
completion says whether it ended by itself or hit its budget, which evaluation counts as `truncated`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.models import load_model, resolve
from harness.pairs import get_pair
from harness.supervise import pair_renderer
from tasks import load_task
from tasks.evaluate import evaluate_task
from tasks.generation import Completion
from tasks.protocol import Sampling
from tasks.transformers_backend import TransformersGenerator
from tests.tiny_models import tiny_tokenizer


def test_long_prompts_are_cut_to_fit_the_context(caplog) -> None:
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=32,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    generator = TransformersGenerator(LlamaForCausalLM(config), tokenizer)
    long, short = list(range(5, 105)), [5, 6, 7]
    out = generator.generate_ids([long, short], Sampling(max_new_tokens=40))
    assert all(1 <= len(tokens) <= 8 for tokens in out)  # budget: min(40, 32 // 4)
    assert "1 of 2 prompts were cut from the left" in caplog.text
    assert generator._fit([long], 40) == [long[-24:]]


def test_a_completion_cut_at_a_stop_string_ended() -> None:
    assert Completion.cut("2 + 3 = 5\n\nQ:", ("\n\n",), stopped=False) == Completion("2 + 3 = 5", ended=True)
    assert Completion.cut("2 + 3 = 5", ("\n\n",), stopped=False) == Completion("2 + 3 = 5", ended=False)
    assert Completion.cut("2 + 3 = 5", ("\n\n",), stopped=True).ended  # at EOS


def test_truncated_is_the_share_of_completions_that_hit_their_budget_on_the_tiny_pair(tmp_path: Path) -> None:
    """The shipped tiny teacher on 20 arith problems, greedy: with 1 or 2 new tokens every completion hits its
    budget; with the pair's own budget (the task's) almost none does."""
    pair = get_pair("tiny")
    model, tokenizer = load_model(resolve(pair.teacher), pair.dtype)
    generator, task = TransformersGenerator(model, tokenizer), load_task("arith")
    rates = {}
    for budget in (1, 2, None):
        log = tmp_path / f"{budget}.jsonl"
        generation = replace(pair.evaluation, max_new_tokens=budget)
        score = evaluate_task(
            task, generator, pair_renderer(pair, tokenizer), limit=20, samples_path=log, generation=generation
        )
        rates[budget] = score.metrics["truncated"]
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        assert [row["metrics"]["truncated"] for row in rows] == [float(not row["ended"][0]) for row in rows]
    assert rates[1] == rates[2] == 1.0 and rates[None] <= 0.1, rates
