"""Dry runs at the real shapes: a real pair's whole pipeline on random-weight models built from its configs.

`harness dry-run --pair P [--scale S]` reads the teacher's and student's config facts shipped in
`harness/configs/models/<hub id>.json` (each with the page it was read from), scales depth and width by S
(S = 1: the real shape; `small`: every dimension at its floor, hidden 64), never the vocabulary, builds both
models with random weights in the pair's dtype, saves each with its real tokenizer, chat template and generation
end ids where harness.tokenizers has them (Qwen2.5, Qwen3, R1-Distill-Qwen, Llama 3.x), else with one tokenizer
padded to exactly as many tokens as the two models share rows (Qwen2.5: 151936 of the teacher's 152064, so the
teacher's padding rows stay unreachable, as in the real pair); `built.json` says which. It writes a pairs file
whose entry is the real pair's with local folders and tiny budgets, and runs `harness.pipeline.run` on it:
supervision, training, evaluation and the record take the path a real run of the pair takes (architecture
class, soft-capping, rope scaling, vocabulary alignment, dtype, mixed precision, the pair's benchmarks), with no
download. Records go to a dry-run results folder, never to `results/`.
"""

from __future__ import annotations

import gc
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib
import torch

from harness.cache import cache_key, cache_root
from harness.pairs import DEFAULT_PAIRS_FILE, Pair, get_pair
from kdcore.errors import HarnessError
from kdcore.io import atomic_write_json, atomic_write_text
from kdcore.progress import console

CONFIGS = Path(__file__).with_name("configs") / "models"
SMALL = "small"
HEAD_DIMS = (32, 64, 128, 256)  # head sizes vLLM's CPU and GPU attention both have kernels for
FLOORS = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}  # 2 layers: Gemma 2 alternates


@dataclass(frozen=True)
class Budget:
    """How much of the pipeline a dry run exercises: prompts supervised, steps trained, problems evaluated."""

    train_prompts: int = 4
    max_steps: int = 2
    batch_size: int = 2
    max_new_tokens: int = 8  # the teacher's completions for supervision
    eval_max_new_tokens: int = 8  # each benchmark's completion budget (random weights rarely stop early)
    limit: int = 2


def model_facts(hub_id: str) -> dict[str, Any]:
    """The shipped config facts of a real model (`harness/configs/models/<hub id>.json`)."""
    path = CONFIGS / f"{hub_id}.json"
    if not path.is_file():
        shipped = sorted(str(p.relative_to(CONFIGS).with_suffix("")) for p in CONFIGS.rglob("*.json"))
        raise HarnessError(f"no shipped config for model {hub_id!r}; shipped: {', '.join(shipped)}")
    return json.loads(path.read_text())


def parse_scale(text: str | float) -> float:
    """`small` -> 0.0 (every dimension at its floor); a number in (0, 1] as given."""
    if text == SMALL:
        return 0.0
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not 0.0 < scale <= 1.0:
        raise HarnessError(f"bad --scale {text!r}; expected {SMALL!r} or a number in (0, 1] (1 = the real shape)")
    return scale


def _round(value: float, multiple: int, floor: int) -> int:
    return max(floor, multiple * round(value / multiple))


def scaled_config(config: dict[str, Any], scale: float) -> dict[str, Any]:
    """`config` with depth and width scaled by `scale` (1: unchanged), the vocabulary and every other fact kept.

    Width: the head size is the real one, or the largest of HEAD_DIMS that leaves at least 2 query heads; the
    hidden size is the scaled one rounded to a whole number of heads; the MLP size scales (a multiple of 32);
    KV heads keep the real grouping (multi-head stays multi-head, grouped-query stays grouped) as far as the
    head count allows. Floors in FLOORS."""
    if scale == 1.0:
        return dict(config)
    target = max(FLOORS["hidden_size"], config["hidden_size"] * scale)
    real_head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    head_dim = max([d for d in HEAD_DIMS if d <= min(real_head_dim, target / 2)], default=HEAD_DIMS[0])
    heads = max(2, round(target / head_dim))
    group = config["num_attention_heads"] // config["num_key_value_heads"]
    kv_heads = max(1, heads // group)
    heads -= heads % kv_heads
    hidden = heads * head_dim  # a multiple of the head count (some configs insist)
    scaled = {
        **config,
        "hidden_size": hidden,
        "intermediate_size": _round(config["intermediate_size"] * scale, 32, FLOORS["intermediate_size"]),
        "num_hidden_layers": max(FLOORS["num_hidden_layers"], round(config["num_hidden_layers"] * scale)),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
    }
    if "query_pre_attn_scalar" in config:  # Gemma 2 scales queries by the head size
        scaled["query_pre_attn_scalar"] = head_dim
    if "max_window_layers" in config:
        scaled["max_window_layers"] = min(config["max_window_layers"], scaled["num_hidden_layers"])
    return scaled


def padded_tokenizer(texts: list[str], size: int) -> Any:
    """A byte-level BPE tokenizer trained on `texts` (the tiny pair's recipe), padded with unreachable filler
    tokens to exactly `size` ids, so a model with `size` vocabulary rows can emit and decode every row."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from harness.tiny import CHAT_TEMPLATE, build_tokenizer

    base = build_tokenizer(texts, 512)
    state = json.loads(base.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    if len(vocab) > size:
        raise HarnessError(f"a vocabulary of {size} rows is smaller than the dry-run tokenizer's {len(vocab)}")
    vocab.update({f"<|fill{i}|>": i for i in range(len(vocab), size)})
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)), pad_token="<|pad|>", eos_token="<|end|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(
    config: dict[str, Any], dtype: str, tokenizer: Any, seed: int, folder: Path, end_ids: list[int] | None = None
) -> None:
    """A random-weight model of `config` in `dtype`, built on the GPU when there is one, saved to `folder` with its
    generation config's end ids (`end_ids`, as the real model's generation_config.json has them)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    values.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    hf_config = AutoConfig.for_model(config["model_type"], **values)
    hf_config.architectures = config["architectures"]
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=getattr(torch, dtype))
    if type(model).__name__ != config["architectures"][0]:
        raise HarnessError(f"config {config['architectures'][0]} built a {type(model).__name__}")
    if end_ids:
        model.generation_config.eos_token_id = list(end_ids)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    if torch.cuda.is_available():  # give the memory back before the run's phases start their engines
        torch.cuda.empty_cache()


def real_recipe(pair: Pair) -> Any:
    """The real tokenizer's recipe (harness.tokenizers) when both models of `pair` have one and its packages are
    installed, else None (the dry run then uses a padded tokenizer of the real vocabulary size)."""
    import importlib.util

    from harness.tokenizers import BY_HUB_ID

    teacher, student = BY_HUB_ID.get(pair.teacher), BY_HUB_ID.get(pair.student)
    if teacher is None or student is None or importlib.util.find_spec(student.package) is None:
        return None
    return student


def build_pair(pair: Pair, scale: float) -> Path:
    """Build (once; cached by configs, scale and dtype) the random-weight teacher and student of `pair`; the
    folder holding `teacher/` and `student/`."""
    facts = {role: model_facts(getattr(pair, role)) for role in ("teacher", "student")}
    configs = {role: scaled_config(f["config"], scale) for role, f in facts.items()}
    for role, config in configs.items():
        if config["architectures"][0] != pair.architecture:
            raise HarnessError(
                f"pair {pair.name!r}: the shipped {role} config is {config['architectures'][0]}, the pair says "
                f"{pair.architecture}"
            )
    recipe = real_recipe(pair)
    tokenizer_id = {"family": recipe.family, "sha256": recipe.tokenizer_sha256} if recipe else "padded"
    key = {"configs": configs, "dtype": pair.dtype, "tokenizer": tokenizer_id, "version": 2}
    root = cache_root() / "dryrun" / cache_key(key)
    if (root / "built.json").exists():
        return root
    console.print(f"[bold]Building random-weight {pair.name} models[/] (scale {scale or SMALL}) in {root}")
    if recipe:
        from harness.tokenizers import real_tokenizer

        tokenizers = {role: real_tokenizer(getattr(pair, role)) for role in configs}  # each model's own template
        end_ids = list(recipe.end_ids)
    else:
        from tasks import load_task

        docs = load_task(pair.train_task).docs("train")[:500]
        texts = ["\n".join(str(value) for value in doc.values()) for doc in docs]
        padded = padded_tokenizer(texts, min(c["vocab_size"] for c in configs.values()))
        tokenizers, end_ids = dict.fromkeys(configs, padded), None
    staging = root.with_name(f"{root.name}.building-{os.getpid()}-{secrets.token_hex(3)}")
    for seed, (role, config) in enumerate(configs.items()):
        build_model(config, pair.dtype, tokenizers[role], seed, staging / role, end_ids)
    atomic_write_json(
        staging / "built.json",
        {"configs": configs, "sources": {r: f["source"] for r, f in facts.items()}, "tokenizer": tokenizer_id},
    )
    try:
        staging.rename(root)
    except OSError:  # another process finished the same build first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _toml(value: Any) -> str:
    """One TOML value (strings, numbers, booleans, lists and inline tables of them)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def dry_run_pairs_file(pair: Pair, source: Path | None, models: Path, budget: Budget, path: Path) -> Path:
    """A pairs file with one entry: `pair` as its pairs file (`source`, default the shipped one) has it, its tables
    (evaluation and supervision protocols, published scores) included, but on the local random-weight models and
    `budget`. Random weights seldom emit EOS, so the supervision keeps budget-hit traces."""
    entry = dict(tomllib.loads(Path(source or DEFAULT_PAIRS_FILE).read_text())["pairs"][pair.name])
    entry.pop("max_new_tokens", None)
    entry.update(
        description=f"dry run of {pair.name}: random weights at its config's shape, tokenizer "
        f"{json.loads((models / 'built.json').read_text()).get('tokenizer', 'padded')}; {pair.description}",
        teacher=str(models / "teacher"),
        student=str(models / "student"),
        train_prompts=budget.train_prompts,
        train={
            **{k: v for k, v in pair.train.items() if k not in ("checkpoint_every", "gradient_accumulation_steps")},
            "max_steps": budget.max_steps,
            "batch_size": budget.batch_size,
        },
    )
    tables = {name: dict(entry.pop(name, {})) for name in ("evaluation", "supervision")}
    tables["supervision"].update(max_new_tokens=budget.max_new_tokens, drop_truncated=False)
    tables["evaluation"].update(max_new_tokens=budget.max_new_tokens)
    tables["evaluation"].pop("budgets", None)
    published = entry.pop("published", [])
    lines = ["schema_version = 1", f"[pairs.{json.dumps(pair.name)}]"]
    lines += [f"{key} = {_toml(value)}" for key, value in entry.items() if value not in (None, {}, [])]
    for name, table in tables.items():
        lines += [f"[pairs.{json.dumps(pair.name)}.{name}]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    for item in published:
        lines += [f"[[pairs.{json.dumps(pair.name)}.published]]", *(f"{k} = {_toml(v)}" for k, v in item.items())]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


@contextmanager
def eval_budget(task_names: tuple[str, ...], max_new_tokens: int) -> Iterator[None]:
    """Cap the completion budget of the named benchmarks while the block runs (restored after): a random model
    seldom emits its end token, so at the benchmarks' own 512-1024 tokens evaluation would dominate a dry run."""
    from tasks import load_task

    classes = {type(load_task(name)) for name in task_names}
    saved = {cls: cls.__dict__.get("max_new_tokens") for cls in classes}
    for cls in classes:
        cls.max_new_tokens = min(cls.max_new_tokens, max_new_tokens)
    try:
        yield
    finally:
        for cls, value in saved.items():
            if value is None:
                del cls.max_new_tokens
            else:
                cls.max_new_tokens = value


def default_results_dir() -> Path:
    return cache_root() / "dryrun" / "results"


def dry_run(
    pair_name: str,
    scale: str | float = SMALL,
    backend: str = "auto",
    results_dir: Path | None = None,
    pairs_file: Path | None = None,
    method: str = "hybrid",
    budget: Budget | None = None,
    method_params: dict[str, Any] | None = None,
) -> tuple[Any, Path]:
    """Run `method` (with `method_params`) on `pair_name` (from `pairs_file`, default the shipped pairs) at `scale`
    with random weights; the record and its path (under `results_dir`, default `$HARNESS_CACHE/dryrun/results`).
    The method and its parameters are checked before any model is built."""
    from harness.pipeline import RunSpec, run
    from harness.spec import Execution
    from trainers.objectives import load_method

    load_method(method, **(method_params or {}))

    value = parse_scale(scale)
    results_dir = Path(results_dir or default_results_dir())
    if results_dir.resolve() == Path("results").resolve():
        raise HarnessError("a dry run's records are not results: pass a --results-dir other than results/")
    pair = get_pair(pair_name, pairs_file)
    if pair.teacher.startswith("builtin:"):
        raise HarnessError(f"pair {pair_name!r} has no real shape to dry-run: it is built in (run it directly)")
    budget = budget or Budget()
    models = build_pair(pair, value)
    local_pairs = dry_run_pairs_file(pair, pairs_file, models, budget, results_dir / "pairs" / f"{pair.name}.toml")
    spec = RunSpec(
        pair=pair.name,
        method=method,
        method_params=method_params or {},
        limit=budget.limit,
        pairs_file=local_pairs,
        execution=Execution(results_dir=results_dir, backend=backend),
    )
    with eval_budget(pair.tasks, budget.eval_max_new_tokens):
        outcome = run(spec)
    if outcome is None:
        raise HarnessError("dry-run is for a single process (no accelerate launch or torchrun)")
    return outcome
