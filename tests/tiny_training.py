"""A tiny random Llama student and synthetic examples, for training-loop tests (no tokenizer, no data files)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainers.loop import TrainConfig, train
from trainers.objectives import load_method


def tiny_student() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def synthetic_examples(n: int = 24) -> list[dict[str, list[int]]]:
    """Random prompts of 3-7 tokens and completions of 2-5 tokens ending at EOS (id 1)."""
    g = torch.Generator().manual_seed(1)

    def tokens(low: int, high: int) -> list[int]:
        return torch.randint(2, 40, (int(torch.randint(low, high, (1,), generator=g)),), generator=g).tolist()

    return [{"prompt_ids": tokens(3, 8), "completion_ids": [*tokens(2, 6), 1]} for _ in range(n)]


DDP_CONFIG = TrainConfig(max_steps=8, batch_size=8, lr=1e-2, seed=0)


def train_tiny(out_dir: Path) -> list[dict[str, float]]:
    """Train the tiny student with `hard` for `DDP_CONFIG`, saving it to `out_dir`; the per-step history."""
    result = train(tiny_student(), load_method("hard"), synthetic_examples(), DDP_CONFIG, pad_id=0, final_dir=out_dir)
    return result.history


if __name__ == "__main__":  # torchrun --nproc-per-node N -m tests.tiny_training OUT: the same training on N processes
    torch.set_num_threads(1)
    history = train_tiny(Path(sys.argv[1]))
    if int(os.environ.get("RANK", "0")) == 0:
        (Path(sys.argv[1]) / "history.json").write_text(json.dumps(history))
