"""Generation's interface: what every backend takes and gives (the backends: `tasks.transformers_backend`,
`tasks.vllm_backend`; the factory that builds one by name: `tasks.backends`).

A generator takes rendered prompt strings (or token ids) and one `Sampling` (max tokens, temperature, top-p, top-k,
stop strings, seed, n), which means the same on every backend, and returns completions. `generate` gives each
completion as a `Completion`: its text and whether it ended by itself (EOS or a stop string) or hit its token budget.
A generator holds its model (an HF model, a vLLM engine) until `close()`; its `backend` names which, and `devices`
how many it occupies. The vLLM backend also has `generate_topk` (`TopkGenerator`): completions and the model's top-k
log-probs at every completion token in one pass, which teacher supervision uses when it is there. `Engine` is what a
backend is built with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.base import Messages
from tasks.protocol import Sampling


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, *, chat_template: bool = True, **template_kwargs: Any
) -> str:
    """The model's chat template applied to `messages` (with `template_kwargs`, e.g. enable_thinking=False);
    the plain concatenated contents when `chat_template` is off or the tokenizer has none."""
    if chat_template and tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
    return "\n\n".join(m["content"] for m in messages) + "\n"


@dataclass(frozen=True)
class Completion:
    """One generated completion: its text, cut before the first stop string, and whether it `ended` by itself (at EOS
    or a stop string; False: it hit its token budget)."""

    text: str
    ended: bool

    @classmethod
    def cut(cls, text: str, stop: Sequence[str], stopped: bool) -> Completion:
        """The completion whose decoded text is `text`, cut before the first stop string; ended when the generator
        `stopped` by itself or a stop string is in the text."""
        kept = truncate_at_stop(text, stop)
        return cls(kept, stopped or len(kept) < len(text))


class Generator(Protocol):
    def generate(self, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        """`sampling.n` completions for each rendered prompt."""

    def generate_ids(self, prompt_ids: list[list[int]], sampling: Sampling) -> list[list[int]]:
        """One completion's token ids (ending at EOS, which is kept) for each prompt."""

    def close(self) -> None: ...


class TopkGenerator(Generator, Protocol):
    def generate_topk(
        self, prompt_ids: list[list[int]], sampling: Sampling, *, k: int
    ) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """For each prompt: one completion's token ids, and the `k` most likely ids [n, k] and their log-probs [n, k]
        in the model's raw distribution (temperature 1) at each of its n tokens. `k` is how many log-probs come
        back; `sampling.top_p` / `top_k` restrict the sampling only."""


def end_token_ids(tokenizer: PreTrainedTokenizerBase | None, generation_config: Any) -> list[int]:
    """The ids a completion ends at: the tokenizer's EOS, then every `eos_token_id` of the model's generation config
    (Llama 3 instruct: <|end_of_text|>, <|eom_id|>, <|eot_id|>; Qwen2.5 instruct: <|im_end|>, <|endoftext|>)."""
    configured = getattr(generation_config, "eos_token_id", None)
    configured = [configured] if isinstance(configured, int) else list(configured or [])
    ids = [getattr(tokenizer, "eos_token_id", None), *configured]
    return list(dict.fromkeys(i for i in ids if i is not None))


@dataclass(frozen=True)
class Engine:
    """How a generator is built: the model's dtype, the engine's seed, the vocabulary rows it may sample (those shared
    with a student; None: all), and vLLM's layout: `tensor_parallel` GPUs per engine, `data_parallel` engines (one
    process each, sharing every call) and each engine's `gpu_memory_utilization` (None: from the memory free as it
    starts)."""

    dtype: str = "float32"
    seed: int = 0
    vocab_rows: int | None = None
    tensor_parallel: int = 1
    data_parallel: int = 1
    gpu_memory_utilization: float | None = None


LoadModel = Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]]


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` cut before the first stop string."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
