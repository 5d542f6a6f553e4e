"""The Hugging Face transformers generation backend: batched `model.generate` in this process, on CPU or GPU."""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from kdcore.progress import progress_bar
from tasks.generation import Completion, end_token_ids
from tasks.protocol import Sampling

logger = logging.getLogger(__name__)


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
