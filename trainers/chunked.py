"""A per-position loss over the vocabulary that never holds more than one chunk of logits, forward or backward.

`chunked_token_loss` runs `loss_fn(logits_fn(hidden[chunk]), chunk)` for one chunk of positions at a time under
non-reentrant activation checkpointing: the forward keeps only each chunk's [chunk] losses, and the backward
recomputes one chunk's [chunk, vocab] logits, backpropagates through them into `hidden` and the head's parameters,
and frees them before the next chunk. Peak memory is then a few [chunk, vocab] float32 tensors instead of several
[positions, vocab] ones, for one extra head forward per chunk (see bench/loss_memory.py). When all positions fit in
one chunk, it is computed without checkpointing: the backward pass would rebuild that whole chunk at once anyway, so
recomputing it would cost a second loss forward (about a fifth of a top-k soft-KD step, bench/train_throughput.py)
and save no memory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

LogitsFn = Callable[[Tensor], Tensor]  # [n, hidden] -> [n, vocab], e.g. lm_head plus any logit softcapping
LossFn = Callable[[Tensor, slice], Tensor]  # (logits of positions[slice], slice) -> [n] per-position losses


def _chunk_loss(hidden: Tensor, logits_fn: LogitsFn, loss_fn: LossFn, rows: slice) -> Tensor:
    return loss_fn(logits_fn(hidden), rows)


def sequence_chunks(sequence: Tensor, chunk_size: int) -> list[slice]:
    """Slices of the rows [N] that each hold whole sequences (`sequence`: each row's sequence id, a sequence's rows
    contiguous), greedily up to `chunk_size` rows; a sequence longer than that is a chunk of its own."""
    if sequence.numel() == 0:
        return []
    ends = [*((sequence[1:] != sequence[:-1]).nonzero()[:, 0] + 1).tolist(), sequence.numel()]
    chunks, start, previous = [], 0, 0
    for end in ends:
        if end - start > chunk_size and previous > start:
            chunks.append(slice(start, previous))
            start = previous
        previous = end
    chunks.append(slice(start, previous))
    return chunks


def chunked_token_loss(
    hidden: Tensor, logits_fn: LogitsFn, loss_fn: LossFn, chunk_size: int, chunks: list[slice] | None = None
) -> Tensor:
    """Per-position losses [N] for hidden states [N, H], computed `chunk_size` positions at a time (or over the given
    `chunks`, consecutive slices covering the N positions, e.g. `sequence_chunks`).

    `loss_fn` receives the chunk's logits and the slice of positions they belong to (to pick that chunk's targets or
    teacher signal); it must be deterministic, since the backward pass calls it again. The caller reduces.
    """
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [positions, hidden_size], got shape {tuple(hidden.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if chunks is None:
        chunks = [
            slice(start, min(start + chunk_size, hidden.shape[0])) for start in range(0, hidden.shape[0], chunk_size)
        ]
    if len(chunks) <= 1:
        return _chunk_loss(hidden, logits_fn, loss_fn, slice(0, hidden.shape[0]))
    losses = [checkpoint(_chunk_loss, hidden[rows], logits_fn, loss_fn, rows, use_reentrant=False) for rows in chunks]
    return torch.cat(losses)
