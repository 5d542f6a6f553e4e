"""The transformers generation backend: prompts longer than the context are cut from the left, not fatal."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tasks.generation import TransformersGenerator
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
    out = generator.generate_ids([long, short], max_new_tokens=40)
    assert all(1 <= len(tokens) <= 8 for tokens in out)  # budget: min(40, 32 // 4)
    assert "1 of 2 prompts were cut from the left" in caplog.text
    assert generator._fit([long], 40) == [long[-24:]]
