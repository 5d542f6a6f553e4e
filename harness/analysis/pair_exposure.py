"""Exposure bias of trained students on a real pair (`harness analyze --pair P --exposure`).

The same quantity as `exposure.mc_exposure` on the finite-state process, with the pair's own teacher as the
reference: per text, the total KL(p_T(.|prefix) || p_S(.|prefix)) over its tokens, averaged over texts the student
samples itself (own-text KL) minus over texts the teacher samples (teacher-forced KL), both at temperature 1 on the
held-out prompts of the pair's first benchmark. Every student of one pair is measured on the same teacher texts
and, per seed, with the same sampling seed; the standard error is over prompts.

Per method (the leaderboard's label) the mean over seeds with a 95% t interval, and paired differences between
methods over the seeds they share.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel

from harness.analysis.study import interval
from harness.models import load_model
from harness.pairs import Pair
from harness.records import RunRecord
from harness.results.groups import group_runs
from harness.supervise import encode, pair_renderer
from kdcore.errors import HarnessError
from kdcore.io import atomic_write_text
from kdcore.progress import progress_bar
from tasks import load_task
from tasks.protocol import Sampling
from tasks.transformers_backend import TransformersGenerator
from trainers.batch import collate
from trainers.divergences import token_divergence
from trainers.loop import hidden_rows, logits_fn


@dataclass(frozen=True)
class StudentExposure:
    run_id: str
    method: str
    seed: int
    teacher_forced_kl: float  # mean per text over the teacher's texts
    own_text_kl: float  # mean per text over the student's own texts
    bias: float
    standard_error: float  # of `bias`, over prompts
    own_text_tokens: float  # mean length of the student's own texts


def text_kl(
    teacher: PreTrainedModel, student: PreTrainedModel, prompts: list[list[int]], texts: list[list[int]], pad_id: int
) -> list[float]:
    """Per text: sum over its tokens of KL(p_T || p_S) at the prefix that precedes each (0 for an empty text)."""
    out: list[float] = []
    teacher_head, student_head = logits_fn(teacher), logits_fn(student)
    with torch.no_grad():
        for start in range(0, len(prompts), 32):
            chunk = [
                {"prompt_ids": p, "completion_ids": c}
                for p, c in zip(prompts[start : start + 32], texts[start : start + 32], strict=True)
            ]
            rows = [ex for ex in chunk if ex["completion_ids"]]
            totals = iter([])
            if rows:
                batch = collate(rows, pad_id)
                teacher_logits = teacher_head(hidden_rows(teacher, batch))
                student_logits = student_head(hidden_rows(student, batch))
                vocab = min(teacher_logits.shape[-1], student_logits.shape[-1])  # the shared rows, as training uses
                kl = token_divergence("fkl", student_logits[:, :vocab], teacher_logits[:, :vocab])
                totals = iter(part.sum().item() for part in kl.split([len(ex["completion_ids"]) for ex in rows]))
            out.extend(next(totals) if ex["completion_ids"] else 0.0 for ex in chunk)
    return out


def exposure_prompts(pair: Pair, tokenizer, limit: int) -> list[list[int]]:
    """The first `limit` held-out prompts of the pair's first benchmark, rendered as its evaluation renders them."""
    task = load_task(pair.tasks[0])
    render = pair_renderer(pair, tokenizer)
    return [encode(tokenizer, render(task.prompt(doc))) for doc in task.docs("test")[:limit]]


def measure_exposure(
    pair: Pair,
    records: list[RunRecord],
    results_dir: Path,
    *,
    limit: int = 200,
    load: Callable[[str], tuple[PreTrainedModel, object]] | None = None,
) -> list[StudentExposure]:
    """Each record's trained student (`results_dir/models/<run_id>`) measured against the pair's teacher; methods
    are labelled as the leaderboard labels them among `records`."""
    labels = {run.run_id: group.label for group in group_runs(records) for run in group.runs}
    load = load or (lambda ref: load_model(ref, pair.dtype, pair.model_kwargs))
    missing = [r.run_id for r in records if not (results_dir / "models" / r.run_id).is_dir()]
    if missing:
        raise HarnessError(f"no trained student under {results_dir / 'models'} for: {', '.join(missing)}")
    teacher, tokenizer = load(pair.teacher)
    prompts = exposure_prompts(pair, tokenizer, limit)
    budget, pad_id = pair.max_new_tokens, tokenizer.pad_token_id
    teacher_texts: dict[int, list[list[int]]] = {}
    found = []
    with progress_bar("exposure", total=len(records)) as advance:
        for record in records:
            sampled = Sampling(budget, temperature=1.0, seed=record.seed)
            if record.seed not in teacher_texts:
                teacher_texts[record.seed] = TransformersGenerator(teacher, tokenizer).generate_ids(prompts, sampled)
            student, _ = load(str(results_dir / "models" / record.run_id))
            own = TransformersGenerator(student, tokenizer).generate_ids(prompts, sampled)
            forced = text_kl(teacher, student, prompts, teacher_texts[record.seed], pad_id)
            rollout = text_kl(teacher, student, prompts, own, pad_id)
            diffs = [a - b for a, b in zip(rollout, forced, strict=True)]
            mean = sum(diffs) / len(diffs)
            spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1) / len(diffs))
            found.append(
                StudentExposure(
                    run_id=record.run_id,
                    method=labels[record.run_id],
                    seed=record.seed,
                    teacher_forced_kl=sum(forced) / len(forced),
                    own_text_kl=sum(rollout) / len(rollout),
                    bias=mean,
                    standard_error=spread,
                    own_text_tokens=sum(map(len, own)) / len(own),
                )
            )
            advance()
    return found


def exposure_markdown(found: list[StudentExposure], reference: str | None) -> str:
    """Per method: seeds, the two KL terms and the bias with 95% intervals over seeds; then each method's paired
    difference in bias from `reference` (the same seeds)."""
    by_method: dict[str, dict[int, StudentExposure]] = defaultdict(dict)
    for item in found:
        by_method[item.method][item.seed] = item
    lines = [
        "| method | seeds | teacher-forced KL / text | own-text KL / text | exposure bias [95% CI] | own text length |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    bias = {m: interval([x.bias for x in items.values()]) for m, items in by_method.items()}
    for method in sorted(by_method, key=lambda m: bias[m]["mean"]):
        items = list(by_method[method].values())
        forced = sum(x.teacher_forced_kl for x in items) / len(items)
        own = sum(x.own_text_kl for x in items) / len(items)
        length = sum(x.own_text_tokens for x in items) / len(items)
        lines.append(
            f"| {method} | {len(items)} | {forced:.3f} | {own:.3f} | {_with_interval(bias[method], '.3f')} | "
            f"{length:.1f} |"
        )
    if reference in by_method:
        lines += ["", f"Paired difference in exposure bias from `{reference}` (same seeds; 95% t interval):", ""]
        lines += ["| method | seeds | difference [95% CI] |", "|---|---:|---:|"]
        base = by_method[reference]
        for method in sorted(m for m in by_method if m != reference):
            shared = sorted(set(by_method[method]) & set(base))
            if len(shared) < 2:
                continue
            diff = interval([by_method[method][s].bias - base[s].bias for s in shared])
            lines.append(f"| {method} | {len(shared)} | {_with_interval(diff, '+.3f')} |")
    return "\n".join(lines) + "\n"


def _with_interval(value: dict[str, float], spec: str) -> str:
    """`mean [low, high]`; the mean alone for one seed (no interval)."""
    if math.isnan(value["low"]):
        return format(value["mean"], spec)
    return f"{value['mean']:{spec}} [{value['low']:{spec}}, {value['high']:{spec}}]"


def write_exposure(found: list[StudentExposure], out: Path, reference: str | None) -> tuple[Path, Path]:
    """`out`.md (the tables) and `out`.json (every student's figures)."""
    markdown, data = out.with_suffix(".md"), out.with_suffix(".json")
    atomic_write_text(markdown, exposure_markdown(found, reference))
    atomic_write_text(data, json.dumps([asdict(x) for x in found], indent=1) + "\n")
    return markdown, data
