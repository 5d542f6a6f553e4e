"""Tiny random-initialised models of the real pairs' architecture classes, built offline for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.tiny import build_tokenizer
from tasks import load_task

MODEL_TYPES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma2ForCausalLM": "gemma2",
}
ARCH_EXTRAS = {
    "gemma2": {"final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "sliding_window": 16},
    "qwen3": {"head_dim": 16},
}


def tiny_llama(vocab_size: int, seed: int) -> LlamaForCausalLM:
    """A one-layer random Llama (hidden 16) in eval mode, its weights fixed by `seed`."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(config).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    docs = load_task("arith").docs("train")[:2000]
    return build_tokenizer([d["question"] + "\n" + d["answer"] for d in docs], 320)


def make_model_dir(
    folder: Path, architecture: str, tokenizer: PreTrainedTokenizerFast, extra_rows: int = 0, hidden: int = 32
) -> Path:
    """Save a random `architecture` model (`len(tokenizer) + extra_rows` vocab rows) and the tokenizer in `folder`."""
    model_type = MODEL_TYPES[architecture]
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer) + extra_rows,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **ARCH_EXTRAS.get(model_type, {}),
    )
    model = AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == architecture
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
