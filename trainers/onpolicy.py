"""On-policy completions: the student samples its own completions for a micro-batch's prompts (GKD)."""

from __future__ import annotations

import random
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.protocol import Sampling
from tasks.transformers_backend import TransformersGenerator


class StudentSampler:
    """With probability `lmbda` per micro-batch, replace the completions with the student's own samples.

    The draw and the sampling seed depend only on (seed, micro-batch index), so a resumed run samples
    the same way an uninterrupted one does.
    """

    def __init__(
        self,
        student: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        lmbda: float,
        temperature: float,
        max_new_tokens: int,
        seed: int,
    ) -> None:
        self.generator = TransformersGenerator(student, tokenizer, description="student samples")
        self.lmbda, self.temperature, self.max_new_tokens, self.seed = lmbda, temperature, max_new_tokens, seed
        self.eos = tokenizer.eos_token_id
        self.sampled_batches = 0

    def __call__(self, examples: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
        rng = random.Random(self.seed * 1_000_003 + index)
        if rng.random() >= self.lmbda:
            return examples
        model = self.generator.model
        was_training = model.training
        model.eval()
        prompts = [list(map(int, ex["prompt_ids"])) for ex in examples]
        sampling = Sampling(self.max_new_tokens, temperature=self.temperature, seed=rng.randrange(2**31))
        completions = self.generator.generate_ids(prompts, sampling)
        model.train(was_training)
        self.sampled_batches += 1
        return [{"prompt_ids": p, "completion_ids": c or [self.eos]} for p, c in zip(prompts, completions, strict=True)]
