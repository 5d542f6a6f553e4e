"""Teacher/student vocabulary alignment for logit distillation.

Models of one family often pad their embedding matrices to different sizes (Qwen2.5-7B has 152064 rows,
Qwen2.5-1.5B 151936, for the same 151665-token tokenizer). Their logits can be compared on the rows both have, as
long as the two tokenizers map every token, added and special tokens included, to the same id. `shared_vocab` checks
that and returns how many rows to keep; genuinely different tokenizers are an error, never a silent truncation.
"""

from __future__ import annotations

from torch import Tensor
from transformers import PreTrainedTokenizerBase

from kdcore.errors import HarnessError


def _ids_used(tokenizer: PreTrainedTokenizerBase) -> int:
    """How many leading rows the tokenizer can emit: len(tokenizer), or one past its largest id if larger."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)


def shared_vocab(
    teacher_tokenizer: PreTrainedTokenizerBase,
    student_tokenizer: PreTrainedTokenizerBase,
    teacher_rows: int,
    student_rows: int,
) -> int:
    """The number of leading vocabulary rows to compare: min(teacher_rows, student_rows), after checking that the two
    tokenizers agree token by token and that both models have a row for every token id.
    """
    teacher_vocab, student_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if teacher_vocab != student_vocab:
        differing = sorted(set(teacher_vocab.items()) ^ set(student_vocab.items()), key=lambda item: (item[1], item[0]))
        token = differing[0][0]
        raise HarnessError(
            f"teacher and student tokenizers differ on {len({t for t, _ in differing})} tokens (e.g. {token!r}: "
            f"teacher id {teacher_vocab.get(token)}, student id {student_vocab.get(token)}); logit distillation "
            "needs a shared vocabulary"
        )
    needed = _ids_used(teacher_tokenizer)
    for role, rows in (("teacher", teacher_rows), ("student", student_rows)):
        if rows < needed:
            raise HarnessError(
                f"the {role} model has {rows} vocabulary rows but its tokenizer uses ids 0..{needed - 1}"
            )
    return min(teacher_rows, student_rows)


def align_logits(logits: Tensor, n: int) -> Tensor:
    """The first `n` vocabulary rows of `logits` (a view over the last axis)."""
    if logits.shape[-1] < n:
        raise ValueError(f"logits have {logits.shape[-1]} vocabulary rows, fewer than the {n} to keep")
    return logits[..., :n]
