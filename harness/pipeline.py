"""One run, top to bottom: supervise -> train -> evaluate -> record (the CLI then rebuilds the leaderboard).

Every phase is timed by one CostLedger. Teacher supervision and teacher scores are cached and reused;
a reused phase is charged with the cost of its original build (see harness.accounting).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch

from harness import launch
from harness.accounting import CostLedger, device_count
from harness.identity import data_identity, eval_settings, model_identities
from harness.models import load_model, load_tokenizer, resolve
from harness.pairs import Pair, get_pair
from harness.records import RunRecord, environment, new_run_id, write_record
from harness.references import reference_scores
from harness.resume import RunState, run_folder
from harness.supervise import (
    SupervisionSettings,
    fitting,
    load_or_build_supervision,
    pair_renderer,
    reference_examples,
)
from kdcore.costs import device_kind
from kdcore.errors import HarnessError, unknown_choice
from kdcore.io import atomic_write_text
from kdcore.scores import TaskScore
from tasks import load_task
from tasks.evaluate import evaluate_model, merge_shards
from tasks.generation import BACKENDS, make_generator
from trainers.loop import TrainConfig, TrainResult, train
from trainers.objectives import Objective, load_method
from trainers.onpolicy import StudentSampler
from trainers.vocab import shared_vocab

TEACHER_SIGNALS = ("topk", "online")


@dataclass
class RunSpec:
    """Everything that defines a run; two runs with equal specs are repeats of one another."""

    pair: str
    method: str
    method_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    train_overrides: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    teacher_signal: str = "topk"
    top_k: int = 32
    backend: str = "auto"
    results_dir: Path = Path("results")
    pairs_file: Path | None = None
    tensor_parallel: int = 1  # vLLM: GPUs per generation engine
    data_parallel: int = 1  # vLLM: generation engines, one process each
    supervision_temperature: float | None = None  # teacher sampling temperature for hard labels (None: the pair's)

    def parallel(self) -> dict[str, int]:
        return {"tensor_parallel": self.tensor_parallel, "data_parallel": self.data_parallel}

    def generation_devices(self) -> int:
        return self.tensor_parallel * self.data_parallel * launch.world_size()


def train_config(pair: Pair, spec: RunSpec) -> TrainConfig:
    values = {"max_length": pair.max_length, **pair.train, **spec.train_overrides, "seed": spec.seed}
    valid = TrainConfig.__dataclass_fields__
    for key in values:
        if key not in valid:
            raise unknown_choice("training setting", key, valid)
    return TrainConfig(**values)


def evaluate_pair_model(
    pair: Pair,
    model_ref: str,
    model: Any,
    tokenizer: Any,
    spec: RunSpec,
    samples_dir: Path,
    results_dir: Path,
    resume_key: str,
) -> dict[str, TaskScore] | None:
    """A pair's teacher or student on the pair's benchmarks, prompted the pair's way; resumable (`resume_key`).

    Under a launch of N processes each evaluates shard (rank, N) of the docs and the main process merges the
    shards' logs and gets the scores (the others None)."""
    world = launch.world_size()
    scores = evaluate_model(
        list(pair.tasks),
        model_ref,
        model,
        tokenizer,
        render=pair_renderer(pair, tokenizer),
        samples_dir=samples_dir,
        results_dir=results_dir,
        backend=spec.backend,
        dtype=pair.dtype,
        limit=spec.limit,
        seed=spec.seed,
        resume_key=resume_key,
        shard=launch.part() if world > 1 else None,
        parallel=spec.parallel(),
    )
    if world == 1:
        return scores
    launch.barrier()
    if not launch.is_main_process():
        return None
    return {name: merge_shards(samples_dir, name, results_dir, world) for name in pair.tasks}


def own_scores(
    pair: Pair, model_ref: str, identity: dict[str, Any], spec: RunSpec, label: str
) -> dict[str, TaskScore] | None:
    """A pair model's own scores on the pair's benchmarks (the teacher's; the student's before distillation),
    evaluated once per (model identity, evaluation settings) and cached by harness.references (None on the
    processes of a launch other than the main one)."""

    def evaluate(folder: Path, key: str) -> dict[str, TaskScore] | None:
        model, tokenizer = load_model(model_ref, pair.dtype, pair.model_kwargs)
        return evaluate_pair_model(pair, model_ref, model, tokenizer, spec, folder / "samples", folder, key)

    return reference_scores(identity, eval_settings(pair, spec.limit), evaluate, spec.results_dir, label=label)


def teacher_supervision(
    spec: RunSpec,
    pair: Pair,
    teacher_tokenizer: Any,
    load_teacher: Callable[[], Any],
    vocab_rows: int,
    ledger: CostLedger,
    part: tuple[int, int] = (0, 1),
) -> Any:
    """The run's teacher supervision from the cache, building slice `part` of its missing shards first (see
    harness.supervise); None while other slices are still missing."""
    teacher_ref = resolve(pair.teacher)
    return load_or_build_supervision(
        pair,
        teacher_ref,
        teacher_tokenizer,
        load_teacher,
        lambda teacher: make_generator(
            teacher_ref,
            teacher,
            teacher_tokenizer,
            backend=spec.backend,
            dtype=pair.dtype,
            vocab_rows=vocab_rows,
            **spec.parallel(),
        ),
        SupervisionSettings(top_k=spec.top_k, temperature=supervision_temperature(pair, spec), seed=0),
        ledger,
        vocab_rows,
        part,
    )


def supervision_temperature(pair: Pair, spec: RunSpec) -> float:
    """The teacher's sampling temperature for hard labels: the run's choice, else the pair's (default 1)."""
    return pair.supervision.temperature if spec.supervision_temperature is None else spec.supervision_temperature


def supervise(spec: RunSpec, part: tuple[int, int] = (0, 1)) -> Any:
    """Build slice `part` of the teacher supervision a run of `spec` uses, without training (e.g. one slice per
    machine before the runs start); the data once every slice is there, else None."""
    pair, _, _ = check_spec(spec)
    teacher_ref, student_ref = resolve(pair.teacher), resolve(pair.student)
    teacher_tokenizer = load_tokenizer(teacher_ref)
    vocab_rows = aligned_vocab(teacher_ref, student_ref, teacher_tokenizer, load_tokenizer(student_ref))
    return teacher_supervision(
        spec,
        pair,
        teacher_tokenizer,
        lambda: load_model(teacher_ref, pair.dtype, pair.model_kwargs)[0],
        vocab_rows,
        CostLedger(),
        part,
    )


def recorded_settings(spec: RunSpec, objective: Objective, config: TrainConfig) -> dict[str, dict[str, Any]]:
    """The settings a run's record carries besides pair, method and seed: what makes two runs comparable."""
    return {
        "method_params": objective.config(),
        "train_config": {
            **config.to_dict(),
            "teacher_signal": spec.teacher_signal,
            "top_k": spec.top_k,
            "supervision_temperature": supervision_temperature(get_pair(spec.pair, spec.pairs_file), spec),
            "limit": spec.limit,
        },
    }


def check_spec(spec: RunSpec) -> tuple[Pair, Objective, TrainConfig]:
    """Validate every name in the spec before any model is loaded."""
    pair = get_pair(spec.pair, spec.pairs_file)
    objective = load_method(spec.method, **spec.method_params)
    for name in pair.tasks:
        load_task(name)
    if spec.backend not in BACKENDS:
        raise unknown_choice("backend", spec.backend, BACKENDS)
    if spec.teacher_signal not in TEACHER_SIGNALS:
        raise unknown_choice("teacher signal", spec.teacher_signal, TEACHER_SIGNALS)
    if launch.world_size() > 1 and spec.generation_devices() > launch.world_size():
        raise HarnessError(
            "--tensor-parallel/--data-parallel are for a single process (vLLM starts its own workers); under "
            "accelerate launch or torchrun every process generates its own shard"
        )
    return pair, objective, train_config(pair, spec)


def run(spec: RunSpec) -> tuple[RunRecord, Path] | None:
    """Run one distillation experiment end to end and write its record; returns the record and its path.

    A run that was stopped resumes from its last checkpoint (see harness.resume). Under `accelerate launch` /
    `torchrun` every process builds a slice of the supervision, trains its share of each batch and evaluates a
    shard of the docs; the main process writes the record and gets it back, the others get None."""
    pair, objective, config = check_spec(spec)
    if pair.cpu_threads and not torch.cuda.is_available():
        torch.set_num_threads(pair.cpu_threads)
    launch.init()
    if launch.world_size() > 1 and spec.backend == "auto":  # vLLM would want the GPUs the training processes hold
        spec = replace(spec, backend="transformers")
    results_dir = Path(spec.results_dir)
    state = RunState.begin(run_folder(spec), lambda: new_run_id(pair.name, objective.name, spec.seed))
    if state.record and Path(state.record).exists():  # killed after writing its record: only clean up
        state.close()
        if not launch.is_main_process():
            return None
        return RunRecord.from_dict(json.loads(Path(state.record).read_text())), Path(state.record)
    run_id = state.run_id
    ledger = CostLedger()
    teacher_ref, student_ref = resolve(pair.teacher), resolve(pair.student)
    student, tokenizer = load_model(student_ref, pair.dtype, pair.model_kwargs)
    teacher_tokenizer = load_tokenizer(teacher_ref)
    vocab_rows = aligned_vocab(teacher_ref, student_ref, teacher_tokenizer, tokenizer)
    load_teacher = cache(lambda: load_model(teacher_ref, pair.dtype, pair.model_kwargs)[0])  # loaded once, if needed

    if objective.completions == "reference":
        task = load_task(pair.train_task)
        docs = task.docs("train")[: pair.train_prompts]
        examples: Any = reference_examples(task, docs, tokenizer, pair_renderer(pair, tokenizer))
        examples = fitting(examples, [len(e["prompt_ids"]) for e in examples], pair.max_length, "reference examples")
    else:
        examples = teacher_supervision(spec, pair, teacher_tokenizer, load_teacher, vocab_rows, ledger, launch.part())
        if launch.world_size() > 1:  # each process built a slice of the shards; all of them are there after this
            launch.barrier()
            if examples is None:
                examples = teacher_supervision(spec, pair, teacher_tokenizer, load_teacher, vocab_rows, ledger)
        state.save(ledger)
    online = objective.on_policy or (objective.soft_labels and spec.teacher_signal == "online")
    sampler = None
    if objective.on_policy:
        params = objective.params
        sampler = StudentSampler(
            student,
            tokenizer,
            lmbda=params.lmbda,
            temperature=params.temperature,
            max_new_tokens=params.max_new_tokens or pair.max_new_tokens,
            seed=spec.seed,
        )
    model_dir = results_dir / "models" / run_id
    with ledger.phase("train") as cost:
        result = train(
            student,
            objective,
            examples,
            config,
            pad_id=tokenizer.pad_token_id,
            teacher=load_teacher() if online else None,
            vocab_rows=vocab_rows,
            out_dir=state.folder,
            cost=cost,
            on_policy=sampler,
            on_checkpoint=lambda step: state.save(ledger),
            final_dir=model_dir,
            description=f"train {objective.name}",
        )
    state.save(ledger)
    if launch.is_main_process():
        tokenizer.save_pretrained(model_dir)
    if launch.world_size() > 1:  # evaluate the saved student: the trained weights may be sharded over processes
        launch.barrier()
        student = load_model(str(model_dir), pair.dtype, pair.model_kwargs)[0]
    with ledger.phase("evaluate", devices=spec.generation_devices()) as cost:
        samples = results_dir / "samples" / run_id
        scores = evaluate_pair_model(pair, str(model_dir), student, tokenizer, spec, samples, results_dir, run_id)
        if scores is not None:
            tokens = _sample_tokens(tokenizer, results_dir, scores)
            cost.add_work(tokens, sum(p.numel() for p in student.parameters()), 2)
    models = model_identities(pair, teacher_ref, student_ref)
    teachers = own_scores(pair, teacher_ref, models["teacher"], spec, "teacher")
    before = own_scores(pair, student_ref, models["student"], spec, "student before distillation")
    if not launch.is_main_process():
        return None
    state.save(ledger)
    training = training_summary(result, results_dir, run_id)
    if sampler is not None:
        training["on_policy_batches"] = sampler.sampled_batches
    record = RunRecord(
        pair=pair.name,
        method=objective.name,
        seed=spec.seed,
        **recorded_settings(spec, objective, config),
        teacher=pair.teacher,
        student=pair.student,
        scores=scores,
        teacher_scores=teachers,
        student_before_scores=before,
        models=models,
        data=data_identity(pair, spec.limit),
        cost=state.total_cost().to_dict(),
        environment=environment(device_kind(), device_count()),
        training=training,
        run_id=run_id,
        attempts=state.attempts,
    )
    path = write_record(record, results_dir)
    state.recorded(path)
    state.close()
    return record, path


def training_summary(result: TrainResult, results_dir: Path, run_id: str) -> dict[str, Any]:
    """The record's view of training: steps, and each diagnostic's mean over the last tenth of the steps (over the
    steps that logged it: the entropies are computed every `diagnostics_every` steps); the per-step diagnostics go to
    `samples/<run_id>/train.jsonl`."""
    log = results_dir / "samples" / run_id / "train.jsonl"
    atomic_write_text(log, "".join(json.dumps(row, sort_keys=True) + "\n" for row in result.history))
    tail = result.history[-max(1, len(result.history) // 10) :]
    names = sorted({name for row in tail for name in row})
    logged = {name: [row[name] for row in tail if name in row] for name in names}
    final = {name: sum(values) / len(values) for name, values in logged.items()}
    return {
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "final": final,
        "log": str(log.relative_to(results_dir)),
    }


def _sample_tokens(tokenizer: Any, results_dir: Path, scores: dict[str, TaskScore]) -> int:
    """Prompt + completion tokens of every logged evaluation sample."""
    total = 0
    for score in scores.values():
        for line in (results_dir / score.samples).read_text().splitlines():
            row = json.loads(line)
            total += len(tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"])
    return total


def aligned_vocab(teacher_ref: str, student_ref: str, teacher_tokenizer: Any, student_tokenizer: Any) -> int:
    """The vocabulary rows teacher and student are compared on (`trainers.vocab.shared_vocab`), with each model's
    row count read from its config, without loading weights."""
    from transformers import AutoConfig

    rows = [AutoConfig.from_pretrained(ref).vocab_size for ref in (teacher_ref, student_ref)]
    return shared_vocab(teacher_tokenizer, student_tokenizer, *rows)
