"""The chunked loss equals the full computation, values and gradients, and only ever sees one chunk of logits."""

from __future__ import annotations

import pytest
import torch

from trainers.chunked import chunked_token_loss
from trainers.divergences import token_divergence
from trainers.topk import topk_divergence, topk_logprobs

torch.set_num_threads(1)

N, H, V = 11, 6, 13


def softcapped_head(head: torch.nn.Linear, cap: float = 5.0):
    """lm_head followed by Gemma-2-style final-logit softcapping, as a caller would pass it."""
    return lambda h: cap * torch.tanh(head(h) / cap)


@pytest.mark.parametrize("chunk_size", [1, 4, 11, 64])
def test_values_and_gradients_match_the_full_computation(chunk_size: int) -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(H, V, bias=False, dtype=torch.float64)
    teacher_logits = torch.randn(N, V, dtype=torch.float64) * 3
    hidden = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    logits_fn = softcapped_head(head)

    def loss_fn(logits: torch.Tensor, rows: slice) -> torch.Tensor:
        return token_divergence("fkl", logits, teacher_logits[rows])

    full = loss_fn(logits_fn(hidden), slice(None))
    full_grads = torch.autograd.grad(full.sum(), (hidden, head.weight))
    chunked = chunked_token_loss(hidden, logits_fn, loss_fn, chunk_size)
    chunked_grads = torch.autograd.grad(chunked.sum(), (hidden, head.weight))
    assert chunked.shape == (N,)
    assert torch.allclose(chunked, full, rtol=0, atol=1e-12)
    for got, expected in zip(chunked_grads, full_grads, strict=True):
        assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_float32_top_k_loss_matches_to_1e5() -> None:
    torch.manual_seed(1)
    head = torch.nn.Linear(H, V, bias=False)
    ids, logprobs = topk_logprobs(torch.randn(N, V) * 2, 4)
    hidden = torch.randn(N, H, requires_grad=True)

    def loss_fn(logits: torch.Tensor, rows: slice) -> torch.Tensor:
        return topk_divergence("jsd", logits, ids[rows], logprobs[rows])

    full = loss_fn(head(hidden), slice(None))
    full_grads = torch.autograd.grad(full.mean(), (hidden, head.weight))
    chunked = chunked_token_loss(hidden, head, loss_fn, 3)
    chunked_grads = torch.autograd.grad(chunked.mean(), (hidden, head.weight))
    assert (chunked - full).abs().max() <= 1e-5
    for got, expected in zip(chunked_grads, full_grads, strict=True):
        assert (got - expected).abs().max() <= 1e-5


def test_logits_are_only_ever_built_one_chunk_at_a_time() -> None:
    torch.manual_seed(2)
    head = torch.nn.Linear(H, V, bias=False)
    rows_seen: list[int] = []

    def logits_fn(h: torch.Tensor) -> torch.Tensor:
        rows_seen.append(h.shape[0])
        return head(h)

    hidden = torch.randn(N, H, requires_grad=True)
    loss = chunked_token_loss(hidden, logits_fn, lambda logits, rows: logits.logsumexp(-1), 4)
    forward_calls = len(rows_seen)
    loss.sum().backward()
    assert rows_seen[:forward_calls] == [4, 4, 3]
    assert sorted(rows_seen[forward_calls:]) == [3, 4, 4]  # each chunk recomputed once in the backward pass
    assert hidden.grad is not None and head.weight.grad is not None


def test_no_positions_give_an_empty_loss() -> None:
    head = torch.nn.Linear(H, V)
    assert chunked_token_loss(torch.zeros(0, H), head, lambda logits, rows: logits.sum(-1), 4).shape == (0,)


def test_bad_shapes_are_rejected() -> None:
    head = torch.nn.Linear(H, V)
    with pytest.raises(ValueError, match="positions"):
        chunked_token_loss(torch.zeros(2, 3, H), head, lambda logits, rows: logits.sum(-1), 4)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_token_loss(torch.zeros(2, H), head, lambda logits, rows: logits.sum(-1), 0)
