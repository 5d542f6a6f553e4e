"""Vocabulary alignment on two tiny models with differently padded vocabularies and offline tokenizers."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from kdcore.errors import HarnessError
from tests.tiny_models import tiny_llama
from trainers.divergences import token_divergence
from trainers.vocab import align_logits, shared_vocab

torch.set_num_threads(1)

WORDS = ["<unk>", "<s>", "</s>", "a", "b", "c", "1", "2", "+", "="]


def tokenizer(words: list[str] = WORDS) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built offline, with a pad token and one added token on top of `words`."""
    model = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.add_tokens(["<think>"])
    return tok


def test_models_with_different_padding_are_compared_on_the_shared_rows() -> None:
    tok = tokenizer()
    teacher, student = tiny_llama(24, seed=0), tiny_llama(16, seed=1)
    rows = shared_vocab(tok, tokenizer(), teacher.config.vocab_size, student.config.vocab_size)
    assert rows == 16 and len(tok) == 12

    ids = torch.tensor([tok("a + b = c")["input_ids"]])
    with torch.no_grad():
        teacher_logits, student_logits = teacher(ids).logits, student(ids).logits
    assert teacher_logits.shape[-1] == 24 and student_logits.shape[-1] == 16
    teacher_logits, student_logits = align_logits(teacher_logits, rows), align_logits(student_logits, rows)
    assert torch.equal(student_logits, student(ids).logits)
    loss = token_divergence("fkl", student_logits, teacher_logits)
    assert loss.shape == ids.shape and torch.isfinite(loss).all() and (loss > 0).all()


def test_a_different_tokenizer_is_an_error() -> None:
    swapped = [*WORDS[:3], "b", "a", *WORDS[5:]]
    with pytest.raises(HarnessError, match=r"tokenizers differ on 2 tokens \(e.g. 'a': teacher id 3, student id 4\)"):
        shared_vocab(tokenizer(), tokenizer(swapped), 24, 16)


def test_a_missing_added_token_is_an_error() -> None:
    student = tokenizer()
    student.add_tokens(["<tool>"])
    with pytest.raises(HarnessError, match="'<tool>': teacher id None, student id 12"):
        shared_vocab(tokenizer(), student, 24, 16)


def test_a_model_without_a_row_for_every_token_is_an_error() -> None:
    with pytest.raises(HarnessError, match=r"student model has 11 vocabulary rows but its tokenizer uses ids 0\.\.11"):
        shared_vocab(tokenizer(), tokenizer(), 24, 11)


def test_align_logits_refuses_to_pad() -> None:
    assert align_logits(torch.zeros(2, 5), 3).shape == (2, 3)
    with pytest.raises(ValueError, match="fewer"):
        align_logits(torch.zeros(2, 5), 6)
