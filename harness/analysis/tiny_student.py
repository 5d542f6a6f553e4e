"""Tiny students for the study: a one-layer GRU over tokens, distilled from the finite-state teacher on its texts.

Every method trains teacher-forced on the same teacher texts, with the trainers' own objectives
(`trainers.load_method`): the teacher's logits are log p_T, exact at every position. Study names map to a trainer
method and its parameters (`STUDY_METHODS`): `hard` (CE on the sampled tokens), `soft` (forward KL to p_T),
`hybrid` (static: half each) and the adaptive hybrids, whose soft weight per token is set by the teacher:
`hybrid-confidence` (the Bridge-Garden release's adap_sft: 1 - p_T(token)), `hybrid-entropy` (its entropy_sft_distill,
teacher smoothness at gamma 2) and `hybrid-risk` (1 - `estimate.estimated_risk`); the soft term is forward KL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.analysis.process import FiniteStateTeacher
from harness.analysis.students import StudentFn
from kdcore.errors import unknown_choice
from trainers import load_method
from trainers.objectives import Objective, TeacherRows

STUDY_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "hard": ("hard", {}),
    "soft": ("soft", {}),
    "hybrid": ("hybrid", {"distill_weight": 0.5}),
    "hybrid-confidence": ("hybrid", {"weighting": "adap_sft"}),
    "hybrid-entropy": ("hybrid", {"weighting": "entropy_sft_distill", "entropy_gamma": 2.0}),
    "hybrid-risk": ("hybrid", {"weighting": "margin-entropy"}),
}


def study_objective(name: str) -> Objective:
    """The trainers' objective behind a study method name."""
    if name not in STUDY_METHODS:
        raise unknown_choice("study method", name, STUDY_METHODS)
    method, params = STUDY_METHODS[name]
    return load_method(method, **params)


@dataclass(frozen=True)
class GRUStudentConfig:
    """The synthetic study's GRU student and its training: texts sampled from the teacher, steps, batch, lr, sizes."""

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


def train_student(
    process: FiniteStateTeacher, method: str, seed: int, config: GRUStudentConfig = GRUStudentConfig()
) -> TinyGRU:
    """Distil a TinyGRU with a study method from `config.texts` teacher texts drawn with `seed` (the same texts and
    initial weights for every method)."""
    objective = study_objective(method)
    torch.manual_seed(seed)
    data = process.sample(config.texts, seed=seed)
    tokens = torch.from_numpy(data.tokens)
    live = torch.from_numpy(data.live)
    with np.errstate(divide="ignore"):
        teacher_logits = torch.from_numpy(np.log(process.teacher[data.states[:, :-1]])).float()
    model = TinyGRU(len(process.vocab), config.embedding, config.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    batches = np.random.default_rng(seed).integers(0, config.texts, size=(config.steps, config.batch_size))
    for step, batch in enumerate(torch.from_numpy(batches)):
        rows = live[batch]
        logits = model(tokens[batch])[:, :-1][rows]
        teacher = TeacherRows(logits=teacher_logits[batch][rows])
        loss = objective.token_losses(logits, tokens[batch][rows], teacher, step / config.steps)["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
    return model.eval()
