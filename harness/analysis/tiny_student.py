"""Tiny students for the study: a one-layer GRU over tokens, distilled from the finite-state teacher on its texts.

Every method trains on the same teacher texts (teacher-forced) with the per-position loss
w * CE(student, sampled token) + (1 - w) * KL(p_T || p_S), where the hard weight w is the method's:
`hard` 1, `soft` 0, `hybrid` a static lambda = 0.5, `hybrid-risk` the teacher-only bridge risk estimate
(`estimate.estimated_risk`: hard where the teacher is sure, soft where it spreads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harness.analysis.estimate import estimated_risk
from harness.analysis.process import FiniteStateTeacher
from harness.analysis.students import StudentFn
from harness.errors import unknown_choice

HYBRID_LAMBDA = 0.5
HardWeight = Callable[[torch.Tensor], torch.Tensor]  # teacher log-probs [..., V] -> hard-label weight [...]
METHODS: dict[str, HardWeight] = {
    "hard": lambda log_probs: torch.ones(log_probs.shape[:-1]),
    "soft": lambda log_probs: torch.zeros(log_probs.shape[:-1]),
    "hybrid": lambda log_probs: torch.full(log_probs.shape[:-1], HYBRID_LAMBDA),
    "hybrid-risk": estimated_risk,
}


@dataclass(frozen=True)
class TrainConfig:
    texts: int = 3000
    steps: int = 800
    batch_size: int = 64
    learning_rate: float = 1e-2
    max_grad_norm: float = 1.0
    embedding: int = 16
    hidden: int = 64


class TinyGRU(nn.Module):
    """Embedding -> GRU -> logits; reads a BOS token first, so it predicts after every prefix, the empty one too."""

    def __init__(self, vocab_size: int, embedding: int, hidden: int) -> None:
        super().__init__()
        self.bos = vocab_size
        self.embed = nn.Embedding(vocab_size + 1, embedding)
        self.gru = nn.GRU(embedding, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[n, t] tokens -> [n, t + 1, V] next-token logits after each prefix."""
        bos = torch.full((tokens.shape[0], 1), self.bos, dtype=tokens.dtype)
        hidden, _ = self.gru(self.embed(torch.cat([bos, tokens], dim=1)))
        return self.head(hidden)


def model_student(model: TinyGRU) -> StudentFn:
    """The model as a `StudentFn` (float32 probabilities)."""

    @torch.no_grad()
    def student(tokens: np.ndarray) -> np.ndarray:
        logits = model(torch.from_numpy(np.asarray(tokens, dtype=np.int64)))
        return logits.softmax(dim=-1).numpy()

    return student


def soft_divergence(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Per-position KL(p_T || p_S) over the last axis (the soft term; the only divergence the study uses)."""
    log_student = student_logits.log_softmax(dim=-1)
    return (torch.special.xlogy(teacher_probs, teacher_probs) - teacher_probs * log_student).sum(dim=-1)


def distillation_loss(method: str, student_logits: torch.Tensor, tokens: torch.Tensor, teacher_probs: torch.Tensor):
    """Per-position w * CE(sampled token) + (1 - w) * KL(p_T || p_S), with w from the method."""
    if method not in METHODS:
        raise unknown_choice("method", method, METHODS)
    weight = METHODS[method](teacher_probs.log())
    hard = nn.functional.cross_entropy(student_logits.transpose(1, 2), tokens, reduction="none")
    return weight * hard + (1 - weight) * soft_divergence(student_logits, teacher_probs)


def train_student(process: FiniteStateTeacher, method: str, seed: int, config: TrainConfig = TrainConfig()) -> TinyGRU:
    """Distil a TinyGRU from `config.texts` teacher texts drawn with `seed` (the same texts for every method)."""
    torch.manual_seed(seed)
    data = process.sample(config.texts, seed=seed)
    tokens = torch.from_numpy(data.tokens)
    teacher_probs = torch.from_numpy(process.teacher[data.states[:, :-1]]).float()
    live = torch.from_numpy(data.live).float()
    model = TinyGRU(len(process.vocab), config.embedding, config.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    batches = np.random.default_rng(seed).integers(0, config.texts, size=(config.steps, config.batch_size))
    for batch in batches:
        batch = torch.from_numpy(batch)
        logits = model(tokens[batch])[:, :-1]
        per_position = distillation_loss(method, logits, tokens[batch], teacher_probs[batch])
        loss = (per_position * live[batch]).sum() / live[batch].sum()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
    return model.eval()
