"""The `tiny` pair: a small Llama-style teacher and a smaller student, shipped with the package.

`build_tiny_pair` is the recipe (`harness build-tiny`): a byte-level BPE tokenizer trained on the `arith` train
split, then teacher and student trained from scratch with the `sft` method on that split, one torch thread (the
weights depend on the thread count). The teacher trains long and is bigger; the student trains briefly, so it
knows the answer format but not yet the arithmetic: that is the gap distillation has to close. Its output is
committed under `harness/builtin/tiny/{teacher,student}` with the sha256 of every weights file and of the
tokenizer in `harness/pairs.toml`; a run uses those files (checked at load) and never trains the pair. Only a
different spec (the tests' miniature) is built, once per spec, into `cache_root()/tiny/<key>/`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import tomllib
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.cache import cache_key, cache_root
from harness.pairs import DEFAULT_PAIRS_FILE
from kdcore.errors import HarnessError
from kdcore.io import atomic_write_json
from kdcore.progress import console

SPECIAL_TOKENS = ("<|pad|>", "<|end|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
ROLES = ("teacher", "student")
SHIPPED_DIR = Path(__file__).with_name("builtin") / "tiny"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("chat_template.jinja", "tokenizer.json", "tokenizer_config.json")  # what `save_pretrained` writes


@dataclass(frozen=True)
class TinyModelSpec:
    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int
    steps: int
    lr: float
    batch_size: int = 32


@dataclass(frozen=True)
class TinySpec:
    """The tiny pair's recipe (measurements in the README's "The tiny pair" section)."""

    vocab_size: int = 384
    teacher: TinyModelSpec = TinyModelSpec(
        hidden_size=128, layers=3, heads=4, intermediate_size=384, steps=1200, lr=3e-3, batch_size=32
    )
    student: TinyModelSpec = TinyModelSpec(
        hidden_size=64, layers=2, heads=2, intermediate_size=256, steps=150, lr=3e-3, batch_size=32
    )
    seed: int = 0


SHIPPED_SPEC = TinySpec()  # the spec the files under SHIPPED_DIR were built from
DEFAULT_SPEC = SHIPPED_SPEC  # what `builtin:tiny/...` resolves to (the tests patch in a miniature)
BUILD_THREADS = 1


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with single-digit number tokens and a small chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|end|>", padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def build_tiny_pair(spec: TinySpec, out: Path, roles: tuple[str, ...] = ROLES, replace: bool = False) -> Path:
    """Train the tokenizer and the `roles` of `spec` with one torch thread and save them as `out/<role>/`
    (model and tokenizer, `save_pretrained` layout) plus `out/spec.json`; written in a staging folder and moved
    into place when complete. An existing `out` is replaced with `replace`, else kept (a concurrent build of the
    same spec finished first)."""
    from harness.supervise import reference_examples
    from tasks import load_task
    from tasks.generation import render_prompt
    from trainers.loop import TrainConfig, train
    from trainers.objectives import load_method

    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)  # the weights depend on the thread count: pin it so every build agrees
    try:
        task = load_task("arith")
        docs = task.docs("train")
        tokenizer = build_tokenizer([d["question"] + "\n" + d["answer"] for d in docs], spec.vocab_size)
        examples = reference_examples(task, docs, tokenizer, lambda messages: render_prompt(tokenizer, messages))
        staging = out.with_name(f"{out.name}.building-{os.getpid()}-{secrets.token_hex(3)}")
        for role in roles:
            model_spec = getattr(spec, role)
            model = build_model(model_spec, tokenizer, spec.seed)
            config = TrainConfig(
                max_steps=model_spec.steps, batch_size=model_spec.batch_size, lr=model_spec.lr, seed=spec.seed
            )
            pad_id = tokenizer.pad_token_id
            train(model, load_method("sft"), examples, config, pad_id=pad_id, description=f"tiny {role}")
            model.save_pretrained(staging / role)
            tokenizer.save_pretrained(staging / role)
        atomic_write_json(staging / "spec.json", asdict(spec))
    finally:
        torch.set_num_threads(threads)
    old = out.with_name(f"{out.name}.old-{os.getpid()}-{secrets.token_hex(3)}")
    if replace and out.exists():
        out.rename(old)
    try:
        staging.rename(out)
    except OSError:  # another process finished the same build first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return out


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tokenizer_sha256(folder: Path) -> str:
    """One sha256 over a folder's tokenizer files (`TOKENIZER_FILES`, each as name, NUL, bytes, in that order)."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if not (folder / name).exists():
            raise HarnessError(f"tokenizer file missing: {folder / name}")
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()


def pair_checksums(root: Path) -> dict[str, str]:
    """The sha256 of each role's weights and of the tokenizer (both roles share one) of a built pair."""
    sums = {role: sha256_file(root / role / WEIGHTS_FILE) for role in ROLES}
    tokenizers = {tokenizer_sha256(root / role) for role in ROLES}
    if len(tokenizers) != 1:
        raise HarnessError(f"{root}: teacher and student tokenizers differ; rebuild with `harness build-tiny`")
    return {**sums, "tokenizer": tokenizers.pop()}


@cache
def expected_checksums() -> dict[str, str]:
    """The sha256 values pinned for the shipped pair in the shipped `pairs.toml` (`[pairs.tiny].sha256`)."""
    return dict(tomllib.loads(DEFAULT_PAIRS_FILE.read_text())["pairs"]["tiny"]["sha256"])


def shipped_pair() -> Path:
    """The folder of the shipped pair, after checking its weights and tokenizers against the sha256 pinned in
    `pairs.toml` (a one-line HarnessError on any difference)."""
    expected = expected_checksums()
    for role in ROLES:
        folder = SHIPPED_DIR / role
        for path in (folder / WEIGHTS_FILE, *(folder / name for name in TOKENIZER_FILES)):
            if not path.exists():
                raise HarnessError(f"shipped tiny pair file missing: {path}; reinstall the package or git checkout it")
        for what, actual in (
            (role, _checksum(folder / WEIGHTS_FILE, _stamp(folder / WEIGHTS_FILE))),
            ("tokenizer", tokenizer_sha256(folder)),
        ):
            if actual != expected[what]:
                raise HarnessError(
                    f"shipped tiny pair {what} in {folder} has sha256 {actual[:12]}..., pairs.toml pins "
                    f"{expected[what][:12]}...; restore it (git checkout) or rebuild with `harness build-tiny`"
                )
    return SHIPPED_DIR


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@cache
def _checksum(path: Path, stamp: tuple[int, int]) -> str:
    """sha256 of a weights file, computed once per (modification time, size)."""
    return sha256_file(path)


def tiny_pair_dir(spec: TinySpec) -> Path:
    """The cache folder of a non-shipped build: keyed by the recipe and by the `arith` data it trains on."""
    from tasks.benchmarks.arith import generate_split

    return cache_root() / "tiny" / cache_key({**asdict(spec), "data": cache_key({"train": generate_split("train")})})


def ensure_tiny_pair(spec: TinySpec | None = None) -> Path:
    """The folder holding `teacher/` and `student/` of the tiny pair: the shipped files (checksum-verified) for the
    shipped spec, else a build of `spec` cached once (the tests' miniature)."""
    spec = spec or DEFAULT_SPEC
    if spec == SHIPPED_SPEC:
        return shipped_pair()
    root = tiny_pair_dir(spec)
    if not (root / "spec.json").exists():
        console.print(f"[bold]Building a tiny pair[/] (once) in {root}")
        build_tiny_pair(spec, root)
    return root
