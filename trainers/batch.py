"""Training examples and batches: prompt + completion token ids, with optional teacher top-k soft labels.

An example is a dict with `prompt_ids` and `completion_ids` (lists of ints) and, for soft labels,
`topk_ids` / `topk_logprobs` (one row of k per completion token: the teacher's distribution over the
token at that place). A batch flattens the completion positions of all examples into N rows, so losses
never see padding: row i is predicted from `hidden[i]` and its target is `targets[i]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch
from torch import Tensor


@dataclass
class Batch:
    input_ids: Tensor  # [B, L] prompt + completion, right-padded
    attention_mask: Tensor  # [B, L]
    positions: Tensor  # [N, 2] (example, position) whose logits predict a completion token
    targets: Tensor  # [N] the completion token predicted at each row
    topk_ids: Tensor | None = None  # [N, k] teacher top-k token ids
    topk_logprobs: Tensor | None = None  # [N, k] teacher top-k log-probs (float32)
    prompt_lengths: Tensor | None = None  # [B]
    row_values: dict[str, Tensor] = field(default_factory=dict)  # [N] each: an example field spread over its rows

    @property
    def num_tokens(self) -> int:
        """Tokens the model reads in one forward pass (non-padding)."""
        return int(self.attention_mask.sum())


def collate(
    examples: list[dict[str, Any]], pad_id: int, max_length: int | None = None, row_fields: tuple[str, ...] = ()
) -> Batch:
    """Right-pad the examples into one batch and gather the rows that predict completion tokens.

    With `max_length`, an example longer than that keeps its whole prompt and the completion tokens (and their
    soft-label rows) that fit, at least one. Each of `row_fields` (one number or bool per example, which every
    example has) is spread over the example's rows as `Batch.row_values[name]`."""
    examples = [
        {
            key: value.tolist() if key.endswith("_ids") and getattr(value, "ndim", 0) == 1 else value
            for key, value in ex.items()
        }
        for ex in examples
    ]
    if max_length is not None:
        examples = [_cut(ex, max(1, max_length - len(ex["prompt_ids"]))) for ex in examples]
    sequences = [ex["prompt_ids"] + ex["completion_ids"] for ex in examples]
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    rows, targets = [], []
    for b, (ex, seq) in enumerate(zip(examples, sequences, strict=True)):
        input_ids[b, : len(seq)] = torch.tensor(seq)
        attention_mask[b, : len(seq)] = 1
        start = len(ex["prompt_ids"])
        for j, token in enumerate(ex["completion_ids"]):
            rows.append((b, start - 1 + j))
            targets.append(token)
    batch = Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        positions=torch.tensor(rows, dtype=torch.long).reshape(-1, 2),
        targets=torch.tensor(targets, dtype=torch.long),
        prompt_lengths=torch.tensor([len(ex["prompt_ids"]) for ex in examples]),
    )
    for name in row_fields:
        batch.row_values[name] = torch.tensor([ex[name] for ex in examples for _ in ex["completion_ids"]])
    if examples and examples[0].get("topk_ids") is not None:
        batch.topk_ids = torch.cat([torch.as_tensor(ex["topk_ids"], dtype=torch.long) for ex in examples])
        batch.topk_logprobs = torch.cat([torch.as_tensor(ex["topk_logprobs"]).to(torch.float32) for ex in examples])
    return batch


def _cut(example: dict[str, Any], room: int) -> dict[str, Any]:
    """`example` with its completion (and the soft-label rows along it) cut to `room` tokens."""
    if len(example["completion_ids"]) <= room:
        return example
    rows = ("completion_ids", "topk_ids", "topk_logprobs")
    return {key: value[:room] if key in rows and value is not None else value for key, value in example.items()}


def read_rows(examples: Any, indices: list[int]) -> list[dict[str, Any]]:
    """The examples at `indices`: items of a list, or one batched read of an Arrow data set's columns.

    Indexed row by row, a `datasets.Dataset` formats every example on its own (with top-k soft labels under the
    torch format, about 1.8 ms each, 70 ms for 32); here the rows come as one Arrow table (under 2 ms for those 32) and
    each column is converted once: token ids to lists of ints, per-token rows of fixed width (the soft labels) to
    one tensor per example, in the stored dtype (`collate` widens them)."""
    if not hasattr(examples, "with_format"):
        return [examples[i] for i in indices]
    table = examples.with_format("arrow")[indices]
    columns = [_column_values(table.column(name).combine_chunks()) for name in table.column_names]
    return [dict(zip(table.column_names, row, strict=True)) for row in zip(*columns, strict=True)]


def _column_values(array: pa.Array) -> list[Any]:
    """One Arrow column as a list of row values: a [tokens, width] tensor per row for lists of fixed-size lists."""
    kind = array.type
    if pa.types.is_list(kind) and pa.types.is_fixed_size_list(kind.value_type) and array.null_count == 0:
        inner = array.flatten()
        if inner.null_count == 0:
            flat = inner.flatten().to_numpy(zero_copy_only=False)
            values = torch.from_numpy(flat.copy()).reshape(-1, kind.value_type.list_size)
            return list(values.split(array.value_lengths().to_numpy().tolist()))
    return array.to_pylist()
