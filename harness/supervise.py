"""Teacher supervision: the teacher's completions (hard labels) and top-k log-probs (soft labels).

Built once per (teacher, prompts, settings) and cached on disk as Arrow shards; later runs reuse it, and the
record charges the original build's cost with `reused: true`. A build killed part-way resumes at its first
missing shard, and several machines can each build a slice of the shards (`harness supervise --shard i/n`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.accounting import CostLedger
from harness.cache import cache_key, cache_root
from harness.launch import is_main_process
from harness.pairs import Pair
from harness.trace_filter import Scorer, TraceCounts, TraceFilter, ended_at_eos, filter_traces, task_scorer
from kdcore.costs import PhaseCost, device_kind, timed
from kdcore.errors import HarnessError
from kdcore.io import atomic_write_json
from kdcore.progress import progress_bar
from tasks import Doc, Messages, Task, load_task
from tasks.generation import Generator, render_prompt
from trainers.batch import collate
from trainers.loop import hidden_rows, logits_fn
from trainers.topk import topk_features, topk_logprobs


@dataclass(frozen=True)
class SupervisionSettings:
    top_k: int = 32
    temperature: float = 1.0  # teacher samples at T=1 (hard labels as the paper defines them); 0 = greedy
    seed: int = 0
    batch_size: int = 64
    shard_size: int = 256  # prompts per cache shard: the unit of resuming a build and of splitting it over machines


KEEP_FINISHED = TraceFilter()  # the default: drop empty and budget-hit traces
COST_FILE = "cost.json"  # written once every shard exists: the entry is complete
META_FILE = "meta.json"  # a shard's row count and build cost, written last
logger = logging.getLogger(__name__)


def pair_renderer(pair: Pair, tokenizer: PreTrainedTokenizerBase) -> Callable[[Messages], str]:
    """Chat messages -> prompt text, as the pair says: its tokenizer's chat template (with the pair's template
    arguments) or plain text. A pair that asks for the chat template of a tokenizer without one gets plain text,
    with a warning."""
    if pair.chat_template == "model" and not tokenizer.chat_template:
        logger.warning(
            "pair %r: tokenizer %s has no chat template; prompts are plain text "
            '(set chat_template = "none" in the pair to say so)',
            pair.name,
            getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
        )
    return lambda messages: render_prompt(
        tokenizer, messages, chat_template=pair.chat_template == "model", **pair.chat_template_kwargs
    )


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(pair: Pair, task: Task, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """Token ids of the pair's distillation prompts: the first `train_prompts` docs of its train task, without
    those too long for the pair's `max_length` (skipped, with a warning)."""
    return prompt_docs(pair, task, tokenizer)[1]


def prompt_docs(pair: Pair, task: Task, tokenizer: PreTrainedTokenizerBase) -> tuple[list[Doc], list[list[int]]]:
    """The docs behind `prompt_ids` and the prompts, aligned (the correctness filter judges against the docs)."""
    render = pair_renderer(pair, tokenizer)
    docs = task.docs("train")[: pair.train_prompts]
    prompts = [encode(tokenizer, render(task.prompt(doc))) for doc in docs]
    kept = fitting(
        list(zip(docs, prompts, strict=True)), [len(p) for p in prompts], pair.max_length, "distillation prompts"
    )
    return [doc for doc, _ in kept], [prompt for _, prompt in kept]


def fitting(items: list[Any], prompt_lengths: list[int], max_length: int, what: str) -> list[Any]:
    """The items whose prompt leaves room for at least one completion token within `max_length` tokens; the
    others are skipped (not truncated: cutting a question changes it), with a warning that counts them."""
    kept = [item for item, length in zip(items, prompt_lengths, strict=True) if length < max_length]
    if len(kept) < len(items):
        logger.warning(
            "%d of %d %s are %d tokens or longer (the pair's max_length) and are skipped",
            len(items) - len(kept),
            len(items),
            what,
            max_length,
        )
    return kept


def reference_examples(
    task: Task, docs: list[Doc], tokenizer: PreTrainedTokenizerBase, render: Callable[[Messages], str]
) -> list[dict[str, Any]]:
    """Prompt + the data set's own reference answer (+ EOS), for training without a teacher (`sft`)."""
    return [
        {
            "prompt_ids": encode(tokenizer, render(task.prompt(doc))),
            "completion_ids": encode(tokenizer, task.reference(doc) + tokenizer.eos_token),
        }
        for doc in docs
    ]


def teacher_topk(
    teacher: PreTrainedModel, examples: list[dict[str, Any]], pad_id: int, k: int, batch_size: int, vocab_rows: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The teacher's top-k (ids, log-probs) at every completion token of each example."""
    head = logits_fn(teacher)
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad(), progress_bar("teacher top-k", total=len(examples)) as advance:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = collate(chunk, pad_id)
            batch.input_ids, batch.attention_mask = (
                batch.input_ids.to(teacher.device),
                batch.attention_mask.to(teacher.device),
            )
            ids, logprobs = topk_logprobs(head(hidden_rows(teacher, batch))[..., :vocab_rows], k, dtype=torch.float16)
            lengths = [len(ex["completion_ids"]) for ex in chunk]
            out.extend(zip(ids.cpu().split(lengths), logprobs.cpu().split(lengths), strict=True))
            advance(len(chunk))
    return out


def build_supervision(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    generator: Generator,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    settings: SupervisionSettings,
    vocab_rows: int,
    trace_filter: TraceFilter = KEEP_FINISHED,
    scorer: Callable[[list[list[int]]], Scorer] | None = None,
    counts: TraceCounts | None = None,
) -> datasets.Dataset:
    """Teacher completions for `prompts` and their top-k soft labels, as an Arrow data set. Empty and (by
    default) budget-hit completions are left out, and with `trace_filter.require_correct` those `scorer(completions)`
    judges wrong; what was left out is logged and added to `counts` (see harness.trace_filter)."""
    completions = generator.generate_ids(
        prompts, max_new_tokens=max_new_tokens, temperature=settings.temperature, seed=settings.seed
    )
    ended = ended_at_eos(completions, getattr(tokenizer, "eos_token_id", None))
    keep, found = filter_traces(completions, ended, trace_filter, scorer(completions) if scorer else None)
    for message in found.messages():
        logger.warning(message)
    if counts is not None:
        counts.add(found)
    if not keep:
        raise HarnessError(
            f"none of {len(prompts)} teacher completions could be kept ({'; '.join(found.messages())}): raise the "
            "pair's supervision.max_new_tokens, or set supervision.drop_truncated = false for a teacher without EOS"
        )
    kept = [(prompts[i], completions[i]) for i in keep]
    examples = [{"prompt_ids": p, "completion_ids": c} for p, c in kept]
    soft = teacher_topk(teacher, examples, tokenizer.pad_token_id, settings.top_k, settings.batch_size, vocab_rows)
    columns = {
        "prompt_ids": [p for p, _ in kept],
        "completion_ids": [c for _, c in kept],
        "topk_ids": [ids.tolist() for ids, _ in soft],
        "topk_logprobs": [lp.tolist() for _, lp in soft],
    }
    features = datasets.Features(
        {
            "prompt_ids": datasets.List(datasets.Value("int32")),
            "completion_ids": datasets.List(datasets.Value("int32")),
            **topk_features(settings.top_k),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)


def supervision_key(teacher_id: str, pair: Pair, prompts: list[list[int]], settings: SupervisionSettings) -> str:
    return cache_key(
        {
            "teacher": teacher_id,
            "prompts": cache_key({"p": prompts}),
            "max_new_tokens": pair.max_new_tokens,
            **asdict(settings),
            "generation": pair.supervision.to_record(),
            "trace_filter": asdict(pair.trace_filter),
        }
    )


def load_or_build_supervision(
    pair: Pair,
    teacher_id: str,
    tokenizer: PreTrainedTokenizerBase,
    load_teacher: Callable[[], PreTrainedModel],
    make_generator: Callable[[PreTrainedModel], Generator],
    settings: SupervisionSettings,
    ledger: CostLedger,
    vocab_rows: int,
    part: tuple[int, int] = (0, 1),
) -> datasets.Dataset | None:
    """The cached supervision for this pair and settings, building what is missing (and charging it) on a miss.

    The cache entry holds one Arrow shard per `settings.shard_size` prompts. A miss builds the missing shards of
    slice `part = (i, n)`: shards i, i+n, ..., so n machines or processes can share the work, and a killed build
    resumes at its first missing shard. A shard that cannot be read is rebuilt, with a warning. Once every shard
    exists the entry is complete: its build cost (the sum of its shards') is charged to `ledger` and the data is
    returned; until then None is returned. The teacher is only loaded when this slice has a shard to build.
    """
    task = load_task(pair.train_task)
    docs, prompts = prompt_docs(pair, task, tokenizer)
    key = supervision_key(teacher_id, pair, prompts, settings)
    judge = load_task(pair.train_task, thinking=pair.supervision.thinking)
    folder = cache_root() / "supervision" / key
    size = settings.shard_size
    bounds = [(start, min(start + size, len(prompts))) for start in range(0, len(prompts), size)]
    if (folder / COST_FILE).exists():
        shards = [_read_shard(folder, i) for i in range(len(bounds))]
        if all(shard is not None for shard in shards):
            ledger.reuse("supervise", key, json.loads((folder / COST_FILE).read_text()))
            return datasets.concatenate_datasets([data for data, _ in shards]).with_format("torch")
        (folder / COST_FILE).unlink(missing_ok=True)
    teacher = generator = None
    clock = time.perf_counter()  # the first shard a slice builds is charged the teacher's loading too
    try:
        for i in range(part[0], len(bounds), part[1]):
            if _read_shard(folder, i) is not None:
                continue
            if teacher is None:
                teacher = load_teacher()
                generator = make_generator(teacher)
            start, stop = bounds[i]
            data = build_supervision(
                teacher,
                tokenizer,
                generator,
                prompts[start:stop],
                max_new_tokens=pair.max_new_tokens,
                settings=replace(settings, seed=settings.seed * 1_000_003 + i),
                vocab_rows=vocab_rows,
                trace_filter=pair.trace_filter,
                scorer=lambda c, docs=docs[start:stop]: task_scorer(judge, docs, c, tokenizer.decode),
                counts=(counts := TraceCounts()),
            )
            cost = PhaseCost(devices=getattr(generator, "devices", 1), device=device_kind(), cache_key=key)
            tokens = sum(len(p) + len(c) for p, c in zip(data["prompt_ids"], data["completion_ids"], strict=True))
            cost.add_work(tokens, sum(p.numel() for p in teacher.parameters()), 2)
            _write_shard(folder, i, data, cost, clock, counts)
            clock = time.perf_counter()
    finally:
        if generator is not None:
            generator.close()
    shards = [_read_shard(folder, i) for i in range(len(bounds))]
    if not all(shard is not None for shard in shards):
        return None
    build = CostLedger()
    for _, cost in shards:
        build.add("supervise", cost)
    if is_main_process():
        atomic_write_json(folder / COST_FILE, asdict(build.phases["supervise"]))
    ledger.add("supervise", build.phases["supervise"])
    return datasets.concatenate_datasets([data for data, _ in shards]).with_format("torch")


def trace_counts(folder: Path) -> TraceCounts:
    """What the trace filter kept and left out over all built shards of a supervision cache entry (for the record)."""
    total = TraceCounts()
    for meta in sorted((folder / "shards").glob(f"*/{META_FILE}")):
        total.add(TraceCounts(**json.loads(meta.read_text()).get("traces", {})))
    return total


def _shard_dir(folder: Path, index: int) -> Path:
    return folder / "shards" / f"{index:05d}"


def _write_shard(
    folder: Path, index: int, data: datasets.Dataset, cost: PhaseCost, clock: float, counts: TraceCounts
) -> None:
    """Save shard `index` under a private name, charge it the time since `clock`, and publish it with one rename:
    a shard folder is always complete (its meta file is written last), whatever kills the process."""
    staging = folder / "shards" / f".{index:05d}.{os.getpid()}.{secrets.token_hex(3)}"
    try:
        data.save_to_disk(str(staging / "data"))
        timed(cost, clock)  # a fresh cost: its wall time becomes the time since `clock`
        atomic_write_json(staging / META_FILE, {"rows": len(data), "cost": asdict(cost), "traces": counts.to_dict()})
        try:
            staging.rename(_shard_dir(folder, index))
        except OSError:  # another process published this shard first: keep theirs
            if _read_shard(folder, index) is None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_shard(folder: Path, index: int) -> tuple[datasets.Dataset, PhaseCost] | None:
    """Shard `index` and its build cost; None when it is missing, or unreadable (then it is removed, with a
    warning, so that it is built again)."""
    path = _shard_dir(folder, index)
    if not (path / META_FILE).exists():
        return None
    try:
        meta = json.loads((path / META_FILE).read_text())
        data = datasets.load_from_disk(str(path / "data"))
        data.data.validate(full=True)
        if len(data) != meta["rows"]:
            raise ValueError(f"{len(data)} rows, expected {meta['rows']}")
        cost = PhaseCost(**meta["cost"])
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:
        logger.warning("supervision shard %s is unreadable (%s); rebuilding it", path, str(err).splitlines()[0])
        shutil.rmtree(path, ignore_errors=True)
        return None
    return data, cost
