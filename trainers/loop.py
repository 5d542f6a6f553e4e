"""The training loop, top to bottom in one file: batches -> student forward -> objective -> update.

Every method shares it, so cost and speed differences between methods come from the methods. The loss
is computed over completion rows in chunks (see `row_terms`), so full-vocabulary logits never exist for
the whole batch at once. Checkpoints hold model, optimiser, scheduler, step and RNG states; a run
restarted with the same output folder resumes from the last one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import broadcast_object_list
from torch import Tensor
from transformers import PreTrainedModel, get_scheduler

from kdcore.costs import PhaseCost
from kdcore.errors import HarnessError, Interrupted
from kdcore.io import atomic_write_json, atomic_write_text, os_error_number
from kdcore.progress import progress_bar
from kdcore.train_settings import check_train_settings
from trainers.batch import Batch, collate, read_rows
from trainers.chunked import chunked_token_loss, sequence_chunks
from trainers.objectives import Objective, TeacherRows, entropy_rows, teacher_logprobs
from trainers.train_log import Tracking, TrainLog, flat_settings

logger = logging.getLogger(__name__)
STEP_FILE = "step.txt"  # steps done; written last, it marks a checkpoint complete
HISTORY_FILE = "history.json"  # the per-step diagnostics so far
DIGEST_FILE = "sha256.json"  # the sha256 of every other file of the checkpoint, checked before it is loaded
# TrainConfig fields that never change the weights
RESULT_NEUTRAL = ("checkpoint_every", "diagnostics_every", "eval_every", "logging_steps")


@dataclass
class TrainConfig:
    """The training settings, with TRL's names where TRL has one; what each means and may be is in
    kdcore.train_settings.TRAIN_SETTINGS, which validates them as they are built."""

    max_steps: int = 200
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = 1.0
    chunk_size: int = 2048
    bf16: bool = False
    checkpoint_every: int = 0
    diagnostics_every: int = 10
    eval_every: int = 0
    logging_steps: int = 0
    max_length: int | None = None
    lora_r: int = 0
    lora_alpha: float = 16.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_train_settings(asdict(self), lambda name: f"training setting {name}")

    def to_dict(self) -> dict[str, Any]:
        """The settings that can change results (how often checkpoints are taken or diagnostics computed does not;
        nor do the LoRA settings of a run without LoRA)."""
        neutral = RESULT_NEUTRAL if self.lora_r else (*RESULT_NEUTRAL, "lora_r", "lora_alpha")
        return {k: v for k, v in asdict(self).items() if k not in neutral}


@dataclass
class TrainResult:
    steps: int
    # one entry of mean loss terms per step; the entropy diagnostics only on the steps that computed them
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0


def logits_fn(model: PreTrainedModel) -> Callable[[Tensor], Tensor]:
    """Hidden states -> logits for `model`, with Gemma-2-style final-logit soft-capping when configured."""
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        return lambda hidden: torch.tanh(head(hidden) / cap) * cap
    return head


def hidden_rows(model: PreTrainedModel, batch: Batch) -> Tensor:
    """The final hidden states at the batch's completion rows: [N, H]."""
    out = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return out.last_hidden_state[batch.positions[:, 0], batch.positions[:, 1]]


def row_terms(
    objective: Objective,
    student: PreTrainedModel,
    batch: Batch,
    progress: float,
    chunk_size: int,
    teacher: PreTrainedModel | None = None,
    vocab_rows: int | None = None,
    diagnose: bool = True,
) -> dict[str, Tensor]:
    """Per-row loss (with grad) and the objective's terms for a batch, computed `chunk_size` rows at a time, plus
    the entropy `diagnostics` when `diagnose` (they cost full-vocabulary passes the loss does not need).

    Each chunk's logits are recomputed in the backward pass (`chunked_token_loss`), so peak memory holds one
    chunk's [chunk, V] logits rather than the whole batch's. An objective with `whole_sequences` gets chunks that
    hold whole sequences (a sequence longer than `chunk_size` is one chunk).
    """
    hidden = hidden_rows(student, batch)
    student_head = logits_fn(student)
    teacher_hidden = teacher_head = None
    if teacher is not None and objective.soft_labels:
        with torch.no_grad():
            teacher_hidden, teacher_head = hidden_rows(teacher, batch), logits_fn(teacher)
    sequence = batch.positions[:, 0]
    topk = TeacherRows(
        batch.topk_ids,
        batch.topk_logprobs,
        row_values=batch.row_values,
        sequence=sequence,
        rows_per_sequence=sequence.numel() / max(1, sequence.unique().numel()),
    )
    names: list[str] = []

    def teacher_signal(rows: slice) -> TeacherRows:
        signal = topk[rows]
        if teacher_hidden is None:
            return signal
        with torch.no_grad():
            online = teacher_head(teacher_hidden[rows])[..., :vocab_rows]
        return replace(signal, logits=online, topk_ids=None, topk_logprobs=None)

    if objective.sequence_logprobs:
        with torch.no_grad():
            means = []
            for start in range(0, len(batch.targets), chunk_size):
                rows = slice(start, min(start + chunk_size, len(batch.targets)))
                student_logprobs = torch.log_softmax(student_head(hidden[rows])[..., :vocab_rows].float(), dim=-1)
                targets = batch.targets[rows]
                own = student_logprobs.gather(-1, targets[:, None])[:, 0]
                means.append(torch.stack([own, teacher_logprobs(teacher_signal(rows), targets)[1]], dim=-1))
            topk.sequence_logprobs = sequence_means(torch.cat(means), sequence)

    def chunk_terms(logits: Tensor, rows: slice) -> Tensor:
        logits = logits[..., :vocab_rows]
        signal = teacher_signal(rows)
        reads_rows = objective.soft_labels or objective.row_fields  # the teacher's signal, or the rows' own values
        terms = objective.token_losses(logits, batch.targets[rows], signal if reads_rows else None, progress)
        if diagnose:
            terms.update(diagnostics(logits, signal, batch.targets[rows]))
        names[:] = list(terms)
        return torch.stack([terms[name] for name in names], dim=-1)

    chunks = sequence_chunks(sequence, chunk_size) if objective.whole_sequences else None
    stacked = chunked_token_loss(hidden, student_head, chunk_terms, chunk_size, chunks)
    terms = {name: stacked[:, i] for i, name in enumerate(names)}
    if objective.reduction == "sequence":
        terms["loss"] = terms["loss"] * sequence_share(sequence).to(terms["loss"].dtype)
    return terms


def sequence_means(values: Tensor, sequence: Tensor) -> Tensor:
    """Each row's value [N, m] replaced by the mean over the rows of its sequence (`sequence` [N] indices)."""
    sums = values.new_zeros(int(sequence.max()) + 1, values.shape[-1]).index_add_(0, sequence, values)
    return (sums / torch.bincount(sequence).clamp(min=1)[:, None].to(values.dtype))[sequence]


def sequence_share(sequence: Tensor) -> Tensor:
    """Per-row weights (rows / (sequences * the row's sequence length)) that make the mean over the rows the mean
    over the sequences of each one's own mean: [N] for the rows' sequence indices [N]."""
    lengths = torch.bincount(sequence)
    return sequence.numel() / (int((lengths > 0).sum()) * lengths[sequence].to(torch.float64))


def diagnostics(logits: Tensor, teacher: TeacherRows, targets: Tensor) -> dict[str, Tensor]:
    """Per-row student entropy, and the teacher's entropy where its signal is present (top-k: over the k + tail
    buckets, a lower bound)."""
    with torch.no_grad():
        out = {"student_entropy": entropy_rows(torch.log_softmax(logits.float(), dim=-1))}
        if teacher.logits is not None or teacher.topk_ids is not None:
            out["teacher_entropy"] = entropy_rows(teacher_logprobs(teacher, targets)[0])
    return out


def _batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The examples of micro-batch `step`: epoch-wise permutations, so any step can be found again on resume."""
    per_epoch = max(1, n_examples // batch_size)
    epoch, slot = divmod(step, per_epoch)
    order = list(range(n_examples))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return order[slot * batch_size : (slot + 1) * batch_size]


def train(
    student: PreTrainedModel,
    objective: Objective,
    examples: list[dict[str, Any]],
    config: TrainConfig,
    *,
    pad_id: int,
    teacher: PreTrainedModel | None = None,
    vocab_rows: int | None = None,
    out_dir: str | Path | None = None,
    cost: PhaseCost | None = None,
    on_policy: Callable[[list[dict[str, Any]], int], list[dict[str, Any]]] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    final_dir: str | Path | None = None,
    description: str = "train",
    log_path: str | Path | None = None,
    tracking: Tracking | None = None,
    evaluate: Callable[[PreTrainedModel], dict[str, float]] | None = None,
) -> TrainResult:
    """Train `student` in place with `objective` on `examples` for `config.max_steps` optimiser steps.

    `on_policy(examples, micro_batch_index)`, when given, replaces a micro-batch's examples before
    collation (on-policy methods use it to swap in student samples). `cost` receives token and FLOP counts
    (of all processes). `final_dir`: where the trained student is saved (`save_pretrained`).

    Under `accelerate launch` / `torchrun`, each of the N processes trains on every N-th example of each
    micro-batch (`batch_size` is the global batch) and the loss is the mean over the global batch's rows, so
    the updates are those of one process with the same batch.

    With `out_dir`, the full training state is checkpointed in `<out_dir>/checkpoint` every
    `config.checkpoint_every` steps, after the last step, and at the end of the step during which SIGTERM
    arrived (then `Interrupted` is raised); a later call with the same `out_dir` resumes from it.
    `on_checkpoint(step)` runs as each checkpoint is saved, just before it replaces the previous one. A non-finite
    loss or gradient norm stops training before the update with a `HarnessError`, leaving the last checkpoint.

    Each step's loss terms, learning rate and throughput are appended to `log_path` (`train.jsonl`) as the step
    ends, shown as a log line every `config.logging_steps` steps, and sent to `tracking`'s tracker with the run's
    settings. `evaluate(student)`, every `config.eval_every` steps and after the last one, scores the student
    (greedy generation on a dev slice) without touching the training RNG; its scores join that step's row as
    `eval/<name>` (and the history: a resumed run keeps them).
    """
    torch.manual_seed(config.seed)
    tracking = tracking or Tracking()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision="bf16" if config.bf16 else "no",
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        # the processes split each global batch: one scheduler step per optimiser step, whatever their number
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=tracking.report_to if tracking.active else None,
        project_dir=tracking.logging_dir,
    )
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise HarnessError(
            f"batch_size {config.batch_size} does not split evenly over {world} processes; "
            f"use a multiple of {world} (it is the global batch)"
        )
    if accelerator.state.deepspeed_plugin is not None:  # DeepSpeed needs the micro-batch up front
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            config.batch_size // world
        )
    n_params = sum(p.numel() for p in student.parameters())
    teacher_params = sum(p.numel() for p in teacher.parameters()) if teacher is not None else 0
    tied = list(getattr(student, "all_tied_weights_keys", None) or {})
    if config.lora_r:
        student = _with_lora(student, config)
    trainable = [p for p in student.parameters() if p.requires_grad]
    # the fused kernel (what transformers' Trainer uses by default): one pass over each parameter per step, where the
    # default for-each-tensor AdamW on CPU makes about ten
    fused = accelerator.device.type in ("cpu", "cuda") and all(p.dtype == torch.float32 for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)
    scheduler = get_scheduler(
        config.lr_scheduler_type, optimizer, math.ceil(config.warmup_ratio * config.max_steps), config.max_steps
    )
    model, optimizer, scheduler = accelerator.prepare(
        StudentRows(student, objective, config.chunk_size, vocab_rows), optimizer, scheduler
    )
    accelerator.register_save_state_pre_hook(_without_tied(tied))
    if teacher is not None:
        teacher = teacher.to(accelerator.device).eval()
    checkpoint_dir = Path(out_dir) / "checkpoint" if out_dir else None
    history = _load_checkpoint(accelerator, checkpoint_dir) if checkpoint_dir else []
    start = len(history)
    result = TrainResult(steps=start, history=history, resumed_from=start)
    _warn_if_cut(examples, config.max_length)
    if tracking.active:
        if tracking.logging_dir is not None and accelerator.is_main_process:
            Path(tracking.logging_dir).mkdir(parents=True, exist_ok=True)  # wandb writes there, and wants it to exist
        accelerator.init_trackers(
            tracking.project(), config=flat_settings(tracking.config), init_kwargs=tracking.init_kwargs()
        )
    log = TrainLog(
        Path(log_path) if log_path else None,
        start,
        config.max_steps,
        config.logging_steps,
        description,
        accelerator.is_main_process,
    )
    if start:
        log.note(f"resumed from the checkpoint at step {start}/{config.max_steps}")
    model.train()
    with (
        progress_bar(description, total=config.max_steps, completed=start) as advance,
        _sigterm_flag() as stopping,
        _closing(log, accelerator, tracking),
    ):
        for step in range(start, config.max_steps):
            totals: dict[str, float] = defaultdict(float)
            every = config.diagnostics_every
            diagnose = bool(every) and (step % every == 0 or step == config.max_steps - 1)
            step_tokens = 0
            for micro in range(config.gradient_accumulation_steps):
                index = step * config.gradient_accumulation_steps + micro
                indices = _batch_indices(index, len(examples), config.batch_size, config.seed)
                chunk = read_rows(examples, indices[rank::world])  # this process's share of the global batch
                if on_policy is not None:
                    chunk = on_policy(chunk, index)
                chunk = objective.batch_examples(chunk)
                batch = _to_device(collate(chunk, pad_id, config.max_length, objective.row_fields), accelerator.device)
                with accelerator.accumulate(model), accelerator.autocast():
                    terms = model(batch, step / config.max_steps, teacher, diagnose)
                    sums = _global_sums(accelerator, terms, batch)
                    _check_finite("loss", sums["loss"] / sums["rows"], step + 1, checkpoint_dir)
                    # mean over the global batch's rows; DDP averages gradients over processes, hence x world
                    accelerator.backward(terms["loss"].sum() * (world / sums["rows"]))
                    if accelerator.sync_gradients and config.max_grad_norm:
                        norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                        if norm is not None:  # None under DeepSpeed, which clips by itself
                            _check_finite("gradient norm", norm, step + 1, checkpoint_dir)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                for name in terms:
                    totals[name] += float(sums[name] / sums["rows"]) / config.gradient_accumulation_steps
                step_tokens += int(sums["tokens"])
                if cost is not None:
                    cost.add_work(int(sums["tokens"]), n_params, 6)
                    cost.flops += 2.0 * teacher_params * float(sums["tokens"])
            due_eval = config.eval_every and ((step + 1) % config.eval_every == 0 or step + 1 == config.max_steps)
            if evaluate is not None and due_eval:
                totals.update(_dev_scores(accelerator, model, evaluate))
                model.train()
            result.history.append(dict(totals))
            result.steps = step + 1
            row = log.step(result.steps, dict(totals), scheduler.get_last_lr()[0], step_tokens)
            if tracking.active:
                accelerator.log(row, step=result.steps)
            advance(loss=totals["loss"])
            stop = _on_any_process(accelerator, stopping())
            due = config.checkpoint_every and result.steps % config.checkpoint_every == 0
            if checkpoint_dir and (due or result.steps == config.max_steps or stop):
                _save_checkpoint(accelerator, checkpoint_dir, result.history, on_checkpoint)
            if stop:
                kept = f"checkpoint saved in {checkpoint_dir}" if checkpoint_dir else "no checkpoint folder: not saved"
                raise Interrupted(
                    f"stopped by SIGTERM after step {result.steps}/{config.max_steps}; {kept}; "
                    "run the same command to resume"
                )
    model.eval()
    if final_dir is not None:
        _save_student(accelerator, model, Path(final_dir))
    return result


@contextmanager
def _closing(log: TrainLog, accelerator: Accelerator, tracking: Tracking) -> Iterator[None]:
    """Close the log file and the tracker however training ends."""
    try:
        yield
    finally:
        log.close()
        if tracking.active:
            accelerator.end_training()


def _dev_scores(
    accelerator: Accelerator, model: torch.nn.Module, evaluate: Callable[[PreTrainedModel], dict[str, float]]
) -> dict[str, float]:
    """`evaluate` on the student as it is now, as `eval/<name>` scores; the RNG states (CPU and CUDA) are restored
    after it, so evaluating never changes what training does next."""
    model.eval()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        scores = evaluate(accelerator.unwrap_model(model).student)
    return {f"eval/{name}": float(value) for name, value in scores.items()}


class StudentRows(torch.nn.Module):
    """The student with its loss in `forward`: per-row loss terms for a batch (see `row_terms`).

    This is the module accelerate wraps (DDP, FSDP, DeepSpeed), so that every use of the student's parameters,
    the output head's included, happens inside the wrapped forward. The teacher is an argument, not a submodule:
    it is never trained, synchronised or sharded with the student.
    """

    def __init__(self, student: PreTrainedModel, objective: Objective, chunk_size: int, vocab_rows: int | None):
        super().__init__()
        self.student = student
        self.objective, self.chunk_size, self.vocab_rows = objective, chunk_size, vocab_rows
        self._no_split_modules = getattr(student, "_no_split_modules", None)  # FSDP wraps these layers

    def forward(
        self, batch: Batch, progress: float, teacher: PreTrainedModel | None = None, diagnose: bool = True
    ) -> dict[str, Tensor]:
        return row_terms(
            self.objective, self.student, batch, progress, self.chunk_size, teacher, self.vocab_rows, diagnose
        )


def _warn_if_cut(examples: Any, max_length: int | None) -> None:
    """Say how many examples are longer than `max_length` (their completions are cut to fit in every batch)."""
    if max_length is None:
        return
    lengths = [_column_lengths(examples, key) for key in ("prompt_ids", "completion_ids")]
    long = sum(p + c > max_length for p, c in zip(*lengths, strict=True))
    if long:
        logger.warning(
            "%d of %d training examples are longer than max_length=%d tokens: their completions are cut to fit",
            long,
            len(examples),
            max_length,
        )


def _column_lengths(examples: Any, key: str) -> list[int]:
    """Lengths of one field of every example (read as a column from an Arrow data set, not row by row)."""
    column = examples[key] if hasattr(examples, "column_names") else [ex[key] for ex in examples]
    return [len(value) for value in column]


def _global_sums(accelerator: Accelerator, terms: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
    """Each term summed over the rows of the global batch (all processes), with the row and token counts."""
    names = [*terms, "rows", "tokens"]
    local = torch.stack(
        [
            *(value.detach().float().sum() for value in terms.values()),
            torch.tensor(float(batch.targets.numel()), device=batch.targets.device),
            torch.tensor(float(batch.num_tokens), device=batch.targets.device),
        ]
    )
    total = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
    return dict(zip(names, total, strict=True))


def _on_any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process when `flag` is true on one of them (so they all stop at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), reduction="sum") > 0)


def _without_tied(tied: list[str]) -> Callable[[list[Any], list[dict[str, Tensor]], str], None]:
    """A save-state hook that leaves the student's tied weights (e.g. `lm_head.weight`, which is the embedding) out
    of the checkpoint: the model holds them once, and loading the checkpoint ties them again."""

    def hook(models: list[Any], weights: list[dict[str, Tensor]], output_dir: str) -> None:
        for state in weights:
            for key in [k for k in state if any(k == f"student.{t}" or k.endswith(f".{t}") for t in tied)]:
                del state[key]

    return hook


def _with_lora(student: PreTrainedModel, config: TrainConfig) -> torch.nn.Module:
    """`student` with LoRA adapters on every linear layer (peft); only the adapters train. The adapters are
    injected into `student` itself, so merging them at the end leaves the caller's model trained."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(student, lora)


def _save_student(accelerator: Accelerator, model: torch.nn.Module, folder: Path) -> None:
    """Save the trained student with `save_pretrained` (LoRA adapters merged into the weights), gathering its
    weights when they are sharded (FSDP, ZeRO-3); the main process writes."""
    student = accelerator.unwrap_model(model).student
    if hasattr(student, "merge_and_unload"):  # a LoRA-wrapped student: save a plain model, loadable anywhere
        merged = student.merge_and_unload()
        if accelerator.is_main_process:
            merged.save_pretrained(folder)
        accelerator.wait_for_everyone()
        return
    state = accelerator.get_state_dict(model)  # every process takes part in the gather
    if accelerator.is_main_process:
        weights = {key.removeprefix("student."): value for key, value in state.items()}
        student.save_pretrained(folder, state_dict=weights)
    accelerator.wait_for_everyone()


@contextmanager
def _sigterm_flag() -> Iterator[Callable[[], bool]]:
    """While training, SIGTERM only sets a flag (the loop then checkpoints at the end of the step and stops)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_finite(what: str, value: Tensor, step: int, checkpoint_dir: Path | None) -> None:
    """Stop before a non-finite value reaches the weights, naming the checkpoint that is kept."""
    if torch.isfinite(value):
        return
    kept = "no checkpoint to keep"
    if checkpoint_dir and (checkpoint_dir / STEP_FILE).exists():
        kept = f"last good checkpoint (step {(checkpoint_dir / STEP_FILE).read_text()}) kept in {checkpoint_dir}"
    raise HarnessError(
        f"non-finite {what} ({float(value.detach())}) at step {step}: training stopped before the update; {kept}; "
        "lower --lr or check the data"
    )


def _to_device(batch: Batch, device: torch.device) -> Batch:
    for name, value in vars(batch).items():
        if isinstance(value, Tensor):
            setattr(batch, name, value.to(device))
    batch.row_values = {name: values.to(device) for name, values in batch.row_values.items()}
    return batch


def _load_checkpoint(accelerator: Accelerator, checkpoint_dir: Path) -> list[dict[str, float]]:
    """Restore the last complete checkpoint (model, optimiser, scheduler, RNG states); the history of the steps
    it holds (empty when there is none). A checkpoint whose files do not match the sha256 it was saved with, or
    whose step count and history disagree, is removed with a one-line warning and training restarts from step 0."""
    staging, previous = _sibling(checkpoint_dir, "new"), _sibling(checkpoint_dir, "old")
    if accelerator.is_main_process and not checkpoint_dir.exists():  # killed between the two renames of a swap
        if (staging / STEP_FILE).exists():
            staging.rename(checkpoint_dir)
        elif (previous / STEP_FILE).exists():
            previous.rename(checkpoint_dir)
    accelerator.wait_for_everyone()
    if not (checkpoint_dir / STEP_FILE).exists():
        return []
    problem = _checkpoint_problem(checkpoint_dir) if accelerator.is_main_process else None
    if accelerator.num_processes > 1:
        problem = broadcast_object_list([problem])[0]
    if problem is not None:
        logger.warning("checkpoint %s is damaged (%s); training restarts from step 0", checkpoint_dir, problem)
        if accelerator.is_main_process:
            shutil.rmtree(checkpoint_dir)
        accelerator.wait_for_everyone()
        return []
    try:
        accelerator.load_state(str(checkpoint_dir))
    except Exception as err:  # verified, yet unreadable: remove it so that the next attempt starts afresh
        if accelerator.is_main_process:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        raise HarnessError(
            f"checkpoint {checkpoint_dir} could not be loaded ({_first_line(err)}); "
            "it is removed: run the same command to train from step 0"
        ) from err
    return json.loads((checkpoint_dir / HISTORY_FILE).read_text())


def _checkpoint_problem(checkpoint_dir: Path) -> str | None:
    """What is wrong with a complete checkpoint's files, or None."""
    try:
        step = (checkpoint_dir / STEP_FILE).read_text().strip()
        history = json.loads((checkpoint_dir / HISTORY_FILE).read_bytes())
        digests = json.loads((checkpoint_dir / DIGEST_FILE).read_bytes())
    except (OSError, ValueError) as err:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        return f"{HISTORY_FILE} is not a list of steps"
    if step != str(len(history)):
        return f"{STEP_FILE} says {step[:20]!r} steps, {HISTORY_FILE} holds {len(history)}"
    found = _file_digests(checkpoint_dir)
    if found != digests:
        changed = sorted(set(found) ^ set(digests) | {n for n in found if found[n] != digests.get(n)})
        return f"sha256 of {changed[0]} does not match {DIGEST_FILE}"
    return None


def _file_digests(folder: Path) -> dict[str, str]:
    """sha256 of the checkpoint's files (all but the step and digest files, written after it)."""
    out = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (STEP_FILE, DIGEST_FILE)):
        with file.open("rb") as handle:
            out[str(file.relative_to(folder))] = hashlib.file_digest(handle, "sha256").hexdigest()
    return out


def _save_checkpoint(
    accelerator: Accelerator,
    checkpoint_dir: Path,
    history: list[dict[str, float]],
    before_swap: Callable[[int], None] | None,
) -> None:
    """Save the full training state next to the old checkpoint, then swap it in: at every moment one complete
    checkpoint exists on disk (the step file is written last and marks a checkpoint complete).

    `before_swap(step)` runs between the two (on the main process), so whatever it records (the cost so far)
    never lags the checkpoint a later attempt resumes from: a kill in between makes that attempt redo, and be
    charged for, a few steps."""
    staging, previous = _sibling(checkpoint_dir, "new"), _sibling(checkpoint_dir, "old")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging))  # every process saves its part (its RNG states at least)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_json(staging / HISTORY_FILE, history)
            atomic_write_json(staging / DIGEST_FILE, _file_digests(staging))
            atomic_write_text(staging / STEP_FILE, str(len(history)))
    except Exception as err:  # a full disk, a file size limit: keep the previous checkpoint, drop the new one
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        if (code := os_error_number(err)) is not None:
            raise OSError(code, os.strerror(code), str(staging)) from err
        raise HarnessError(
            f"writing the checkpoint {staging} failed ({_first_line(err)}); "
            f"the previous checkpoint is kept in {checkpoint_dir}: free space (or raise the file size limit) and "
            "run the same command to resume"
        ) from err
    if accelerator.is_main_process:
        if before_swap is not None:
            before_swap(len(history))
        shutil.rmtree(previous, ignore_errors=True)
        if checkpoint_dir.exists():
            checkpoint_dir.rename(previous)
        staging.rename(checkpoint_dir)
        shutil.rmtree(previous, ignore_errors=True)
    accelerator.wait_for_everyone()


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _sibling(checkpoint_dir: Path, suffix: str) -> Path:
    return checkpoint_dir.with_name(f"{checkpoint_dir.name}.{suffix}")
