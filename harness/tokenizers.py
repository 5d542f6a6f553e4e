"""The real pairs' tokenizers, built offline from the BPE ranks that registry packages ship, with the models' own
special tokens, chat templates and end-of-turn ids.

- Llama 3.x: `llama-models` ships Meta's `llama_models/llama3/tokenizer.model` (tiktoken ranks, 128,000 tokens);
  the 256 special tokens and the split pattern are those of its `llama_models/llama3/tokenizer.py`.
- Qwen2.5, Qwen3 and DeepSeek-R1-Distill-Qwen: `dashscope` ships `dashscope/resources/qwen.tiktoken` (151,643
  ranks); each model adds its own special tokens from id 151643 on (listed below from the models' published
  tokenizer configs, see harness/templates/SOURCES.md).
- Gemma 2 and DeepSeek-Coder: no package on the registries this project uses ships their vocabularies (Gemma's
  SentencePiece model and DeepSeek-Coder's 32k BPE are on the hub only), so they have none here.

`harness build-tokenizers` builds them all into the cache (`real_tokenizer` builds one on first use); the ranks
files and the built `tokenizer.json` are checked against the sha256 pinned here, so every machine gets the same
tokenizer. The packages are the `tokenizers` extra (`pip install -e '.[tokenizers]'`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import cache_root
from kdcore.errors import HarnessError

TEMPLATES = Path(__file__).with_name("templates")
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _llama3_specials() -> tuple[tuple[str, bool], ...]:
    """Meta's 256 special tokens after the 128,000 ranks (llama_models/llama3/tokenizer.py, `Tokenizer.__init__`)."""
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|image|>",
    ]
    reserved = [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(named))]
    return tuple((token, True) for token in named + reserved)


# Qwen2.5's added tokens, ids 151643-151664: (content, special), as its tokenizer_config.json lists them.
QWEN25_SPECIALS = (
    *((t, True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>")),
    *((t, True) for t in ("<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>")),
    *((t, True) for t in ("<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")),
    *((t, False) for t in ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>")),
    *((t, False) for t in ("<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")),
)
# Qwen3 keeps those and adds 151665-151668.
QWEN3_SPECIALS = (
    *QWEN25_SPECIALS,
    *((t, False) for t in ("<tool_response>", "</tool_response>", "<think>", "</think>")),
)
# DeepSeek-R1-Distill-Qwen replaces 151643-151649 with DeepSeek's own tokens and keeps Qwen's from 151650 on.
R1_DISTILL_SPECIALS = (
    ("<｜end▁of▁sentence｜>", True),
    ("<｜User｜>", False),
    ("<｜Assistant｜>", False),
    ("<｜begin▁of▁sentence｜>", True),
    ("<|EOT|>", False),
    ("<think>", False),
    ("</think>", False),
    *QWEN25_SPECIALS[7:],
)


@dataclass(frozen=True)
class Recipe:
    """How one model family's tokenizer is built: ranks file (in `package`, with its sha256), split pattern, added
    tokens, the named special tokens, the chat template and the ids generation ends at (generation_config.json)."""

    family: str
    package: str
    ranks: str  # path inside the package
    ranks_sha256: str
    pattern: str
    specials: tuple[tuple[str, bool], ...]
    template: str  # file under harness/templates
    bos: str | None
    eos: str
    pad: str | None
    end_ids: tuple[int, ...]
    tokenizer_sha256: str  # of the built tokenizer.json (`harness build-tokenizers` prints it)
    add_bos: bool = False
    nfc: bool = False  # Qwen's tokenizers normalise to NFC before splitting
    ignore_merges: bool = False  # a word that is a whole token is that token (Llama 3's tokenizer.json)
    hub_ids: tuple[str, ...] = field(default_factory=tuple)


LLAMA_RANKS = "llama3/tokenizer.model"
LLAMA_RANKS_SHA256 = "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"
QWEN_RANKS = "resources/qwen.tiktoken"
QWEN_RANKS_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"

RECIPES = {
    recipe.family: recipe
    for recipe in (
        Recipe(
            family="llama-3.1",
            tokenizer_sha256="8106f37794f8ee387f9ebfca47812cef9c10e6a99201fcaacb663ff560c4d432",
            package="llama_models",
            ranks=LLAMA_RANKS,
            ranks_sha256=LLAMA_RANKS_SHA256,
            pattern=LLAMA3_PATTERN,
            specials=_llama3_specials(),
            template="llama-3.1-instruct.jinja",
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            pad=None,
            end_ids=(128001, 128008, 128009),
            add_bos=True,
            ignore_merges=True,
            hub_ids=("meta-llama/Llama-3.1-8B-Instruct",),
        ),
        Recipe(
            family="llama-3.2",
            tokenizer_sha256="8106f37794f8ee387f9ebfca47812cef9c10e6a99201fcaacb663ff560c4d432",
            package="llama_models",
            ranks=LLAMA_RANKS,
            ranks_sha256=LLAMA_RANKS_SHA256,
            pattern=LLAMA3_PATTERN,
            specials=_llama3_specials(),
            template="llama-3.2-instruct.jinja",
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            pad=None,
            end_ids=(128001, 128008, 128009),
            add_bos=True,
            ignore_merges=True,
            hub_ids=("meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"),
        ),
        Recipe(
            family="qwen2.5",
            tokenizer_sha256="1619ceecf4c64691e25c70887f4bc09188c326cdb97aa9d3ae6e37555b564fbb",
            package="dashscope",
            ranks=QWEN_RANKS,
            ranks_sha256=QWEN_RANKS_SHA256,
            pattern=QWEN_PATTERN,
            specials=QWEN25_SPECIALS,
            template="qwen2.5-instruct.jinja",
            bos=None,
            eos="<|im_end|>",
            pad="<|endoftext|>",
            end_ids=(151645, 151643),
            nfc=True,
            hub_ids=("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"),
        ),
        Recipe(
            family="qwen3",
            tokenizer_sha256="646be3d3116a5f25b0d26b71086608f88aaf4650d53bfadc1e8d258a70529e7e",
            package="dashscope",
            ranks=QWEN_RANKS,
            ranks_sha256=QWEN_RANKS_SHA256,
            pattern=QWEN_PATTERN,
            specials=QWEN3_SPECIALS,
            template="qwen3.jinja",
            bos=None,
            eos="<|im_end|>",
            pad="<|endoftext|>",
            end_ids=(151645, 151643),
            nfc=True,
            hub_ids=("Qwen/Qwen3-8B", "Qwen/Qwen3-1.7B"),
        ),
        Recipe(
            family="deepseek-r1-distill-qwen",
            tokenizer_sha256="4f1908f0dc3c1a06525ccea6d6aabc1b354098b5566b39e211bc86d8ed09c159",
            package="dashscope",
            ranks=QWEN_RANKS,
            ranks_sha256=QWEN_RANKS_SHA256,
            pattern=QWEN_PATTERN,
            specials=R1_DISTILL_SPECIALS,
            template="deepseek-r1-distill-qwen.jinja",
            bos="<｜begin▁of▁sentence｜>",
            eos="<｜end▁of▁sentence｜>",
            pad="<｜end▁of▁sentence｜>",
            end_ids=(151643,),
            nfc=True,
            hub_ids=("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
        ),
    )
}
BY_HUB_ID = {hub_id: recipe for recipe in RECIPES.values() for hub_id in recipe.hub_ids}
NONE_SHIPPED = {  # models of the shipped pairs whose vocabulary no registry package ships
    "google/gemma-2-9b-it": "Gemma 2",
    "google/gemma-2-2b-it": "Gemma 2",
    "deepseek-ai/deepseek-coder-6.7b-instruct": "DeepSeek-Coder",
    "deepseek-ai/deepseek-coder-1.3b-instruct": "DeepSeek-Coder",
}


def recipe_for(hub_id: str) -> Recipe:
    """The recipe of `hub_id`; a one-line error naming the models that have one when it has none."""
    if hub_id in BY_HUB_ID:
        return BY_HUB_ID[hub_id]
    why = (
        f"no registry package ships the {NONE_SHIPPED[hub_id]} vocabulary"
        if hub_id in NONE_SHIPPED
        else "it is not a model of a shipped pair with a packaged vocabulary"
    )
    raise HarnessError(
        f"no real tokenizer for {hub_id!r} here ({why}); real tokenizers exist for: {', '.join(sorted(BY_HUB_ID))}"
    )


def _ranks_file(recipe: Recipe) -> Path:
    spec = importlib.util.find_spec(recipe.package)
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(
            f"the {recipe.family} tokenizer is built from the {recipe.package} package, which is not installed: "
            "pip install -e '.[tokenizers]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / recipe.ranks
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    if digest != recipe.ranks_sha256:
        raise HarnessError(f"{path}: sha256 {digest}, expected {recipe.ranks_sha256} (another package version?)")
    return path


@functools.cache
def _byte_table() -> dict[int, str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def _byte_level(token: bytes) -> str:
    table = _byte_table()
    return "".join(table[b] for b in token)


def load_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken ranks file: one `base64(token) rank` per line."""
    import base64

    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def merges_of(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """BPE merges that rebuild tiktoken's ranks: each token of two or more bytes is the merge of the split whose
    halves are both tokens, the lowest-ranked such split first; merges in the order of the tokens they make."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        merges.extend((left, right, rank) for left, right in splits)
    merges.sort(key=lambda m: m[2])
    return [(left, right) for left, right, _ in merges]


def tokenizer_json(recipe: Recipe) -> str:
    """The `tokenizer.json` of `recipe` (a byte-level BPE over the package's ranks, with the added tokens)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    ranks = load_ranks(_ranks_file(recipe))
    vocab = {_byte_level(token): rank for token, rank in ranks.items()}
    merges = [(_byte_level(a), _byte_level(b)) for a, b in merges_of(ranks)]
    tokenizer = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=recipe.ignore_merges))
    if recipe.nfc:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(recipe.pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    steps = [processors.ByteLevel(trim_offsets=False)]
    if recipe.add_bos:
        bos_id = len(ranks) + [t for t, _ in recipe.specials].index(recipe.bos)
        steps.append(
            processors.TemplateProcessing(
                single=f"{recipe.bos} $A",
                pair=f"{recipe.bos} $A {recipe.bos} $B:1",
                special_tokens=[(recipe.bos, bos_id)],
            )
        )
    tokenizer.post_processor = processors.Sequence(steps)
    tokenizer.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in recipe.specials])
    if tokenizer.get_vocab_size() != len(ranks) + len(recipe.specials):
        raise HarnessError(f"{recipe.family}: an added token collides with a rank")
    return tokenizer.to_str()


def _folder(recipe: Recipe) -> Path:
    return cache_root() / "tokenizers" / recipe.family


def build(recipe: Recipe, replace: bool = False) -> Path:
    """Build `recipe`'s tokenizer folder (tokenizer.json, tokenizer_config.json with the chat template) in the
    cache, once, atomically; checked against its pinned sha256 when the recipe pins one."""
    from transformers import PreTrainedTokenizerFast

    folder = _folder(recipe)
    if (folder / "tokenizer_config.json").is_file() and not replace:
        return folder
    text = tokenizer_json(recipe)
    from tokenizers import Tokenizer

    names = {"bos_token": recipe.bos, "eos_token": recipe.eos, "pad_token": recipe.pad}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(text), **{k: v for k, v in names.items() if v is not None}
    )
    tokenizer.chat_template = (TEMPLATES / recipe.template).read_text()
    staging = folder.with_name(f"{folder.name}.building-{os.getpid()}-{secrets.token_hex(3)}")
    tokenizer.save_pretrained(staging)
    digest = hashlib.sha256((staging / "tokenizer.json").read_bytes()).hexdigest()
    if digest != recipe.tokenizer_sha256:
        shutil.rmtree(staging, ignore_errors=True)
        raise HarnessError(
            f"the built {recipe.family} tokenizer.json has sha256 {digest}, expected {recipe.tokenizer_sha256} "
            "(another tokenizers or transformers version?)"
        )
    (staging / "generation_end_ids.json").write_text(json.dumps(list(recipe.end_ids)))
    if replace:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        staging.rename(folder)
    except OSError:  # another process finished the same build first
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def real_tokenizer(hub_id: str) -> Any:
    """The real tokenizer of `hub_id` (a `PreTrainedTokenizerFast` with the model's chat template), built offline."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(build(recipe_for(hub_id)))


def build_all(replace: bool = True) -> dict[str, str]:
    """Build every recipe's tokenizer; the sha256 of each built tokenizer.json, by family."""
    sums = {}
    for family, recipe in RECIPES.items():
        folder = build(recipe, replace=replace)
        sums[family] = hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    return sums
