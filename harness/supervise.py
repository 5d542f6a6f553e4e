"""Teacher supervision: the teacher's completions (hard labels) and top-k log-probs (soft labels).

Built once per (teacher, prompts, settings) and cached on disk as an Arrow data set; later runs reuse it,
and the record charges the original build's cost with `reused: true`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.accounting import CostLedger
from harness.cache import cache_key, cache_root
from harness.io import atomic_write_json
from harness.pairs import Pair
from harness.progress import progress_bar
from tasks import Doc, Messages, Task, load_task
from tasks.generation import Generator, render_prompt
from trainers.batch import collate
from trainers.loop import hidden_rows, logits_fn
from trainers.topk import topk_features, topk_logprobs


@dataclass(frozen=True)
class SupervisionSettings:
    top_k: int = 32
    temperature: float = 0.0  # 0 = greedy teacher completions (sequence-level KD's usual choice)
    seed: int = 0
    batch_size: int = 64


def pair_renderer(pair: Pair, tokenizer: PreTrainedTokenizerBase) -> Callable[[Messages], str]:
    """Chat messages -> prompt text, as the pair says: its tokenizer's chat template (with the pair's template
    arguments) or plain text."""
    return lambda messages: render_prompt(
        tokenizer, messages, chat_template=pair.chat_template == "model", **pair.chat_template_kwargs
    )


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(pair: Pair, task: Task, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """Token ids of the pair's distillation prompts: the first `train_prompts` docs of its train task."""
    render = pair_renderer(pair, tokenizer)
    return [encode(tokenizer, render(task.prompt(doc))) for doc in task.docs("train")[: pair.train_prompts]]


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
) -> datasets.Dataset:
    """Teacher completions for `prompts` and their top-k soft labels, as an Arrow data set."""
    completions = generator.generate_ids(
        prompts, max_new_tokens=max_new_tokens, temperature=settings.temperature, seed=settings.seed
    )
    kept = [(p, c) for p, c in zip(prompts, completions, strict=True) if c]
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
) -> datasets.Dataset:
    """The cached supervision for this pair and settings, building it (and charging the build) on a miss.

    `load_teacher()` and `make_generator(teacher)` are only called on a miss: a cache hit never loads the teacher.
    """
    task = load_task(pair.train_task)
    prompts = prompt_ids(pair, task, tokenizer)
    key = supervision_key(teacher_id, pair, prompts, settings)
    folder = cache_root() / "supervision" / key
    if (folder / "cost.json").exists():
        ledger.reuse("supervise", key, json.loads((folder / "cost.json").read_text()))
        return datasets.load_from_disk(str(folder / "data")).with_format("torch")
    with ledger.phase("supervise") as cost:
        cost.cache_key = key
        teacher = load_teacher()
        generator = make_generator(teacher)
        data = build_supervision(
            teacher,
            tokenizer,
            generator,
            prompts,
            max_new_tokens=pair.max_new_tokens,
            settings=settings,
            vocab_rows=vocab_rows,
        )
        generator.close()
        n_params = sum(p.numel() for p in teacher.parameters())
        tokens = sum(len(p) + len(c) for p, c in zip(data["prompt_ids"], data["completion_ids"], strict=True))
        cost.add_work(tokens, n_params, 2)
    staging = folder.with_name(key + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    data.save_to_disk(str(staging / "data"))
    atomic_write_json(staging / "cost.json", asdict(ledger.phases["supervise"]))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return datasets.load_from_disk(str(folder / "data")).with_format("torch")
