"""Generation backends behind one interface: Hugging Face transformers here, vLLM in `tasks.vllm_backend`.

A generator takes rendered prompt strings (or token ids) and one `Sampling` (max tokens, temperature, top-p, top-k,
stop strings, seed, n), which means the same on every backend, and returns completions. `generate` gives each
completion as a `Completion`: its text and whether it ended by itself (EOS or a stop string) or hit its token budget.
A generator holds its model (an HF model here, a vLLM engine there) until `close()`; its `backend` names which, and
`devices` how many it occupies. The vLLM backend also has `generate_topk` (`TopkGenerator`): completions and the
model's top-k log-probs at every completion token in one pass, which teacher supervision uses when it is there.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from kdcore.errors import HarnessError, unknown_choice
from kdcore.progress import progress_bar
from kdcore.registry import Registry
from tasks.base import Messages
from tasks.protocol import Sampling

logger = logging.getLogger(__name__)


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


class TransformersGenerator:
    """Batched `model.generate` with left padding, on CPU or GPU; a completion ends at any of `end_ids`."""

    def __init__(
        self,
        model: PreTrainedModel | str,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        batch_size: int = 64,
        dtype: torch.dtype = torch.float32,
        description: str = "generate",
        vocab_rows: int | None = None,
    ) -> None:
        """`vocab_rows`: only ids below it may be generated (a teacher whose padded embedding has more rows
        than the vocabulary it shares with its student must not emit the extra ones)."""
        if isinstance(model, str):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        if torch.cuda.is_available():
            model = model.to("cuda")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.description = batch_size, description
        self.backend, self.devices = "transformers", 1
        rows = model.get_output_embeddings().weight.shape[0]
        self.vocab_rows = rows if vocab_rows is None else min(vocab_rows, rows)
        self.suppress = list(range(vocab_rows, rows)) if vocab_rows is not None and vocab_rows < rows else None
        self.end_ids = end_token_ids(tokenizer, getattr(model, "generation_config", None))

    def _fit(self, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Prompts cut from the left (as lm-evaluation-harness does) where prompt + completion budget would not fit
        the model's context window; the completion budget kept is min(max_new_tokens, context / 4)."""
        context = getattr(self.model.config, "max_position_embeddings", None)
        if context is None:
            return prompt_ids
        keep = context - max(1, min(max_new_tokens, context // 4))
        cut = [ids[-keep:] if len(ids) > keep else ids for ids in prompt_ids]
        if n_cut := sum(len(a) != len(b) for a, b in zip(cut, prompt_ids, strict=True)):
            logger.warning("%d of %d prompts were cut from the left to fit the context of %d", n_cut, len(cut), context)
        return cut

    def _budget(self, prompt_width: int, max_new_tokens: int) -> int:
        """`max_new_tokens`, capped so prompt + completion fit the model's context window."""
        context = getattr(self.model.config, "max_position_embeddings", None)
        return max_new_tokens if context is None else min(max_new_tokens, context - prompt_width)

    def generate_ids(self, prompt_ids: list[list[int]], sampling: Sampling) -> list[list[int]]:
        torch.manual_seed(sampling.seed)
        max_new_tokens, temperature = sampling.max_new_tokens, sampling.temperature
        prompt_ids = self._fit(prompt_ids, max_new_tokens)
        pad, ends = self.tokenizer.pad_token_id, self.end_ids
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        results: list[list[int]] = [[] for _ in prompt_ids]
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": sampling.top_p, "top_k": sampling.top_k}
            if temperature > 0
            else {"do_sample": False}
        )
        with progress_bar(self.description, total=len(prompt_ids)) as advance:
            for start in range(0, len(order), self.batch_size):
                index = order[start : start + self.batch_size]
                width = max(len(prompt_ids[i]) for i in index)
                budget = self._budget(width, max_new_tokens)
                ids = torch.full((len(index), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, i in enumerate(index):
                    ids[row, width - len(prompt_ids[i]) :] = torch.tensor(prompt_ids[i])
                    mask[row, width - len(prompt_ids[i]) :] = 1
                with torch.no_grad():
                    out = self.model.generate(
                        input_ids=ids.to(self.model.device),
                        attention_mask=mask.to(self.model.device),
                        max_new_tokens=budget,
                        pad_token_id=pad,
                        eos_token_id=ends,
                        suppress_tokens=self.suppress,
                        **sampling,
                    )
                for row, i in enumerate(index):
                    tokens = out[row, width:].tolist()
                    end = next((k for k, token in enumerate(tokens) if token in ends), None)
                    results[i] = tokens if end is None else tokens[: end + 1]
                advance(len(index))
        return results

    def generate(self, prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        outputs: list[list[Completion]] = [[] for _ in prompts]
        for sample in range(sampling.n):
            ids = self.generate_ids(prompt_ids, sampling.seeded(sampling.seed + sample))
            for i, tokens in enumerate(ids):
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                ended = bool(tokens) and tokens[-1] in self.end_ids
                outputs[i].append(Completion.cut(text, sampling.stop, stopped=ended))
        return outputs

    def close(self) -> None:
        """Nothing to release: the model is garbage-collected with the generator."""


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
BackendFactory = Callable[[str, LoadModel, Engine], Generator]  # (model_ref, load, engine) -> generator
BACKENDS: Registry[BackendFactory] = Registry("backend")
AUTO = "auto"  # vLLM when it is installed and a GPU is present, else transformers


def backend_choices() -> list[str]:
    return [AUTO, *BACKENDS.names()]


def resolve_backend(backend: str) -> str:
    """A registered backend: `auto` is vLLM when it is installed and a GPU is present, else transformers."""
    if backend != AUTO and backend not in BACKENDS:
        raise unknown_choice("backend", backend, backend_choices())
    if backend == AUTO:
        return "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "transformers"
    return backend


@BACKENDS.register("transformers")
def transformers_generator(model_ref: str, load: LoadModel, engine: Engine) -> Generator:
    """Generation with the HF model `load()` gives, in this process (the model is loaded as given: `model_ref`,
    `dtype`, `seed` and the memory share are vLLM's)."""
    if engine.tensor_parallel > 1 or engine.data_parallel > 1:
        raise HarnessError(
            f"--tensor-parallel {engine.tensor_parallel} / --data-parallel {engine.data_parallel} need vLLM: pass "
            "--backend vllm on a machine with vLLM and GPUs"
        )
    model, tokenizer = load()
    return TransformersGenerator(model, tokenizer, vocab_rows=engine.vocab_rows)


@BACKENDS.register("vllm")
def vllm_generator(model_ref: str, load: LoadModel, engine: Engine) -> Generator:
    """A vLLM engine for `model_ref` (a folder or hub id), `data_parallel` of them in processes of their own; no HF
    model is loaded in this process."""
    from functools import partial

    from tasks.parallel import DataParallelGenerator
    from tasks.vllm_backend import VLLMGenerator

    build = partial(
        VLLMGenerator,
        model_ref,
        dtype=engine.dtype,
        seed=engine.seed,
        vocab_rows=engine.vocab_rows,
        tensor_parallel=engine.tensor_parallel,
        gpu_memory_utilization=engine.gpu_memory_utilization,
    )
    if engine.data_parallel > 1:
        return DataParallelGenerator(build, engine.data_parallel, devices_per_worker=engine.tensor_parallel)
    return build()


def make_generator(model_ref: str, load: LoadModel, *, backend: str = AUTO, engine: Engine = Engine()) -> Generator:
    """A generator on `backend` (see `resolve_backend`), built by its registered factory with `engine`'s settings.
    transformers: `load()` gives the HF model and tokenizer it generates with (called only for this backend). vLLM: an
    engine for `model_ref` (a folder or hub id)."""
    return BACKENDS[resolve_backend(backend)](model_ref, load, engine)


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` cut before the first stop string."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
