"""Loading a pair's models and tokenizers: hub ids, local folders, or the embedded tiny pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from harness.pairs import DTYPES
from kdcore.errors import HarnessError, unknown_choice

BUILTIN = "builtin:"


def resolve(ref: str) -> str:
    """A model reference as `from_pretrained` takes it: builtin refs become the shipped folder, checked against the
    sha256 pinned in pairs.toml (`harness.tiny.shipped_pair`; the tests' miniature pair: its cached build)."""
    if not ref.startswith(BUILTIN):
        return ref
    name, _, role = ref[len(BUILTIN) :].partition("/")
    if name != "tiny" or role not in ("teacher", "student"):
        raise HarnessError(f"unknown builtin model {ref!r}; valid: builtin:tiny/teacher, builtin:tiny/student")
    from harness.tiny import ensure_tiny_pair

    return str(ensure_tiny_pair() / role)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a model. Local folders holding a plain tokenizer.json load as a fast tokenizer
    as saved (transformers 5's AutoTokenizer may pick a model-specific class that splits text differently)."""
    folder = Path(path)
    if (folder / "tokenizer.json").exists():
        config = (folder / "tokenizer_config.json").read_text() if (folder / "tokenizer_config.json").exists() else ""
        if '"PreTrainedTokenizerFast"' in config or '"TokenizersBackend"' in config:
            return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def load_model(
    ref: str, dtype: str = "float32", model_kwargs: dict[str, Any] | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, on the GPU when there is one) and tokenizer for a hub id, folder or builtin ref."""
    if dtype not in DTYPES:
        raise unknown_choice("dtype", dtype, DTYPES)
    path = resolve(ref)
    try:
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **(model_kwargs or {}))
    except OSError as err:
        raise HarnessError(f"cannot load model {ref!r}: {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), tokenizer
