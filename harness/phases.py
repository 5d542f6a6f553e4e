"""The phases of one run, and what each keeps resident on the device.

A phase does one part of a run (supervise, student responses, train, evaluate the student, evaluate the teacher,
record) inside one `ledger.phase(...)` of the driver (`harness.pipeline.run`). It asks `Resident` for the models it
needs (HF models, or generators: vLLM engines or HF models behind the transformers backend) and never keeps them:
when the phase ends the driver releases everything it asked for (engines shut down, references dropped,
`gc.collect()`, `torch.cuda.empty_cache()`), before the next phase loads anything. Phases do not know about ranks:
the driver gives each its slice of the work and whether it is the process that writes, and calls `finish` on every
process once all the slices are done.

The device memory plan, per phase (on one GPU, at most one of {a vLLM engine, the HF models} at a time):
- supervise: the teacher's generator only: a vLLM engine (one pass: samples and top-k log-probs), or the HF teacher
  (transformers: generation, then one forward pass);
- a data source of the method's plan (e.g. student_responses): its model's generator only;
- train: the HF student, and the HF teacher when the data plan's teacher signal is online. No engine: on-policy
  methods (GKD) sample from the student with HF `generate` on the training weights themselves, so the weights never
  have to be synchronised into an engine, and no engine competes with training for memory;
- evaluate: the trained student's generator only (loaded from the saved model);
- evaluate_teacher: the teacher's generator only (once per teacher, tasks and limit; cached after);
- record: nothing.
Each vLLM engine's memory share comes from the memory free as it starts (see `tasks.vllm_backend`), unless the pair
(`gpu_memory_utilization` in pairs.toml) or `--gpu-memory-utilization` sets it.
"""

from __future__ import annotations

import gc
import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from harness.accounting import CostLedger
from harness.dev_eval import dev_evaluator
from harness.identity import eval_settings, identity_key
from harness.models import load_model
from harness.pairs import Pair
from harness.references import published, reference_folder, reference_key
from harness.resume import RunState
from harness.supervise import (
    SupervisionSettings,
    fitting,
    load_or_build_source,
    load_or_build_supervision,
    pair_renderer,
    reference_examples,
    supervision_folder,
    trace_counts,
)
from kdcore.costs import PhaseCost, device_memory_in_use, timed
from kdcore.io import atomic_folder, atomic_write_json
from kdcore.progress import console
from kdcore.scores import TaskScore
from tasks import load_task
from tasks.backends import make_generator
from tasks.evaluate import evaluate_model, merge_shards
from tasks.generation import Engine, Generator
from trainers.loop import TrainConfig, TrainResult, train
from trainers.objectives import Objective
from trainers.onpolicy import StudentSampler
from trainers.plan import DataPlan, DataSource
from trainers.train_log import Tracking

COST_FILE = "cost.json"  # a cached teacher evaluation's build cost
EVAL_PREFIX = "eval/"  # the training history's dev-slice scores (trainers.loop)


class Resident:
    """The HF models and generators the running phase holds; `release` frees them all."""

    def __init__(self, spec: Any, pair: Pair) -> None:
        self.spec, self.pair = spec, pair
        self.models: list[PreTrainedModel] = []
        self.generators: list[Generator] = []
        self.peak_device = 0  # device memory in use (all processes: vLLM's engine runs in its own) seen meanwhile

    def model(self, ref: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The HF model (eval mode, on the GPU when there is one) and tokenizer of `ref`."""
        model, tokenizer = load_model(ref, self.pair.dtype, self.pair.model_kwargs)
        self.models.append(model)
        return model, tokenizer

    def generator(self, ref: str, *, seed: int = 0, vocab_rows: int | None = None) -> Generator:
        """A generator for `ref` on the run's backend: a vLLM engine, or `ref`'s HF model (loaded here)."""
        spec = self.spec
        engine = Engine(
            dtype=self.pair.dtype,
            seed=seed,
            vocab_rows=vocab_rows,
            gpu_memory_utilization=spec.execution.gpu_memory_utilization or self.pair.gpu_memory_utilization,
            **spec.execution.parallel(),
        )
        generator = make_generator(ref, lambda: self.model(ref), backend=spec.execution.backend, engine=engine)
        self.generators.append(generator)
        self.peak_device = max(self.peak_device, device_memory_in_use())
        return generator

    def release(self) -> int:
        """Close every generator (vLLM engines shut down), drop every model, collect, empty the CUDA cache; the
        device memory in use seen while they were held."""
        peak = max(self.peak_device, device_memory_in_use())
        for generator in self.generators:
            generator.close()
        self.generators.clear()
        self.models.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.peak_device = 0
        return peak


@dataclass
class RunContext:
    """What the phases of one run share: its settings, its state, and what earlier phases produced."""

    spec: Any  # harness.pipeline.RunSpec
    pair: Pair
    objective: Objective
    plan: DataPlan
    config: TrainConfig
    state: RunState
    ledger: CostLedger
    teacher_ref: str
    student_ref: str
    tokenizer: PreTrainedTokenizerBase  # the student's
    teacher_tokenizer: PreTrainedTokenizerBase
    vocab_rows: int  # rows teacher and student are compared on
    resident: Resident
    examples: Any = None  # the training examples, once prepared
    result: TrainResult | None = None
    training: dict[str, Any] = field(default_factory=dict)  # extra facts for the record's `training` (phases add them)
    scores: dict[str, TaskScore] | None = None
    teacher_scores: dict[str, TaskScore] | None = None
    student_before_scores: dict[str, TaskScore] | None = None
    models: dict[str, Any] = field(default_factory=dict)  # teacher's and student's identities (harness.identity)
    tracking: Tracking = field(default_factory=Tracking)  # where training's scalars go besides train.jsonl

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def results_dir(self) -> Path:
        return Path(self.spec.execution.results_dir)

    @property
    def model_dir(self) -> Path:
        """Where the trained student is saved."""
        return self.results_dir / "models" / self.run_id


class Phase:
    """One part of a run. `name` is its ledger phase (None: no device work, not charged)."""

    name: ClassVar[str | None]

    def devices(self, ctx: RunContext) -> int | None:
        """Devices the phase occupies (None: one per process)."""
        return None

    def run(self, ctx: RunContext, cost: PhaseCost, part: tuple[int, int], writer: bool) -> None:
        """Do this process's slice `part` = (i, n) of the phase; `writer`: this process writes shared files."""

    def finish(self, ctx: RunContext, cost: PhaseCost, writer: bool) -> None:
        """After every process has done its slice (only when there are several): gather the slices."""


def supervision_temperature(pair: Pair, spec: Any) -> float:
    """The teacher's sampling temperature for hard labels: the run's choice, else the pair's supervision setting."""
    return pair.supervision.temperature if spec.supervision_temperature is None else spec.supervision_temperature


def parameter_count(ref: str) -> int:
    """Parameters of the model at `ref`, counted on the meta device (no weights are read)."""
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ref)).parameters())


class ReferenceData(Phase):
    """The data set's own reference answers as the completions (no teacher, no device work)."""

    name = None

    def run(self, ctx, cost, part, writer):
        task = load_task(ctx.pair.train_task)
        docs = task.docs("train")[: ctx.pair.train_prompts]
        examples = reference_examples(task, docs, ctx.tokenizer, pair_renderer(ctx.pair, ctx.tokenizer))
        lengths = [len(e["prompt_ids"]) for e in examples]
        ctx.examples = fitting(examples, lengths, ctx.pair.max_length, "reference examples")


class Supervise(Phase):
    """The teacher's completions and top-k soft labels, from the cache or built (see harness.supervise); the record's
    `training.supervision_traces` says how many traces were generated, kept and left out (harness.trace_filter)."""

    name = "supervise"

    def devices(self, ctx):
        return ctx.spec.execution.generation_devices()

    def run(self, ctx, cost, part, writer):
        self._load(ctx, part)

    def finish(self, ctx, cost, writer):
        if ctx.examples is None:  # every slice is there now
            self._load(ctx, (0, 1))

    def _load(self, ctx: RunContext, part: tuple[int, int]) -> None:
        data, built = load_or_build_supervision(
            ctx.pair,
            identity_key(ctx.models["teacher"]),
            ctx.teacher_tokenizer,
            lambda: ctx.resident.generator(ctx.teacher_ref, vocab_rows=ctx.vocab_rows),
            SupervisionSettings(top_k=ctx.spec.top_k, temperature=supervision_temperature(ctx.pair, ctx.spec), seed=0),
            parameter_count(ctx.teacher_ref),
            part,
        )
        if built is not None:
            ctx.ledger.settle(self.name, built)
            ctx.examples = data
            if (counts := trace_counts(supervision_folder(built.cache_key))) is not None:
                ctx.training["supervision_traces"] = counts.to_dict()


class GenerateSource(Phase):
    """One data source of the method's data plan (trainers.plan.DataSource): generated by its model (the teacher,
    or the student before distillation) on the run's generation backend, cached, charged as the phase
    `source.name`, and added to every training example as `source.example_field`."""

    def __init__(self, source: DataSource) -> None:
        self.source = source
        self.name = source.name

    def devices(self, ctx):
        return ctx.spec.execution.generation_devices()

    def run(self, ctx, cost, part, writer):
        self._load(ctx, part)

    def finish(self, ctx, cost, writer):
        if self.source.example_field not in _columns(ctx.examples):
            self._load(ctx, (0, 1))

    def _load(self, ctx: RunContext, part: tuple[int, int]) -> None:
        role = self.source.model
        ref = ctx.teacher_ref if role == "teacher" else ctx.student_ref
        tokenizer = ctx.teacher_tokenizer if role == "teacher" else ctx.tokenizer
        prompts = [[int(t) for t in ids] for ids in _column(ctx.examples, "prompt_ids")]
        data, built = load_or_build_source(
            ctx.pair,
            self.source,
            identity_key(ctx.models[role]),
            prompts,
            lambda: ctx.resident.generator(ref),
            parameter_count(ref),
            tokenizer.eos_token_id,
            part,
        )
        if built is None:
            return
        ctx.ledger.settle(self.name, built)
        responses = data.with_format(None)["completion_ids"]
        field = self.source.example_field
        if hasattr(ctx.examples, "add_column"):
            ctx.examples = ctx.examples.add_column(field, responses)
        else:
            ctx.examples = [ex | {field: r} for ex, r in zip(ctx.examples, responses, strict=True)]


def _columns(examples: Any) -> set[str]:
    return set(examples.column_names) if hasattr(examples, "column_names") else set(examples[0]) if examples else set()


def _column(examples: Any, name: str) -> list[Any]:
    return examples.with_format(None)[name] if hasattr(examples, "column_names") else [ex[name] for ex in examples]


class Train(Phase):
    """The student trained with the objective: the HF student, and the HF teacher when the signal is online."""

    name = "train"

    def run(self, ctx, cost, part, writer):
        cost.backend = "accelerate"
        student, _ = ctx.resident.model(ctx.student_ref)
        teacher = ctx.resident.model(ctx.teacher_ref)[0] if ctx.plan.needs_teacher_model else None
        sampler = None
        if (on_policy := ctx.plan.on_policy) is not None:  # HF generate on the training weights: no engine
            sampler = StudentSampler(
                student,
                ctx.tokenizer,
                lmbda=on_policy.lmbda,
                temperature=on_policy.temperature,
                max_new_tokens=on_policy.max_new_tokens or ctx.pair.max_new_tokens,
                seed=ctx.spec.seed,
            )
        # the trained student and its tokenizer appear in the model folder together, or not at all
        with atomic_folder(ctx.model_dir) if writer else nullcontext(ctx.model_dir) as folder:
            ctx.result = train(
                student,
                ctx.objective,
                ctx.examples,
                ctx.config,
                pad_id=ctx.tokenizer.pad_token_id,
                teacher=teacher,
                vocab_rows=ctx.vocab_rows,
                out_dir=ctx.state.folder,
                cost=cost,
                on_policy=sampler,
                on_checkpoint=lambda step: ctx.state.save(ctx.ledger),
                final_dir=folder,
                description=f"train {ctx.objective.name}",
                log_path=train_log_path(ctx.results_dir, ctx.run_id),
                tracking=ctx.tracking,
                evaluate=dev_evaluator(ctx.pair, ctx.tokenizer, ctx.spec.seed) if ctx.config.eval_every else None,
            )
            if writer:
                ctx.tokenizer.save_pretrained(folder)
        if sampler is not None:
            ctx.training["on_policy_batches"] = sampler.sampled_batches


def _evaluate(
    ctx: RunContext, model_ref: str, part: tuple[int, int], samples_dir: Path, results_dir: Path, key: str
) -> dict[str, TaskScore]:
    """Model `model_ref` on the pair's benchmarks (slice `part` of the docs), prompted the pair's way, with one
    generator for all of them; resumable (`key`)."""
    generator = ctx.resident.generator(model_ref, seed=ctx.spec.seed)
    return evaluate_model(
        list(ctx.pair.tasks),
        generator,
        render=pair_renderer(ctx.pair, ctx.tokenizer),
        samples_dir=samples_dir,
        results_dir=results_dir,
        limit=ctx.spec.limit,
        seed=ctx.spec.seed,
        resume_key=key,
        shard=part if part[1] > 1 else None,
        generation=ctx.pair.evaluation,
    )


def _merged(ctx: RunContext, samples_dir: Path, results_dir: Path, count: int) -> dict[str, TaskScore]:
    return {name: merge_shards(samples_dir, name, results_dir, count) for name in ctx.pair.tasks}


class EvaluateStudent(Phase):
    """The trained student (as saved) on the pair's benchmarks."""

    name = "evaluate"

    def devices(self, ctx):
        return ctx.spec.execution.generation_devices()

    def run(self, ctx, cost, part, writer):
        self.samples, self.count = ctx.results_dir / "samples" / ctx.run_id, part[1]
        scores = _evaluate(ctx, str(ctx.model_dir), part, self.samples, ctx.results_dir, ctx.run_id)
        cost.backend = ctx.resident.generators[0].backend
        if part[1] == 1:
            self._scored(ctx, cost, scores)

    def finish(self, ctx, cost, writer):
        if writer:
            self._scored(ctx, cost, _merged(ctx, self.samples, ctx.results_dir, self.count))

    def _scored(self, ctx: RunContext, cost: PhaseCost, scores: dict[str, TaskScore]) -> None:
        ctx.scores = scores
        cost.add_work(_sample_tokens(ctx.tokenizer, ctx.results_dir, scores), parameter_count(str(ctx.model_dir)), 2)


class EvaluateReference(Phase):
    """A pair model's own scores on the pair's benchmarks (`role` teacher, or student before distillation): evaluated
    once per (model identity, evaluation settings) and cached with its cost, which every run that uses the scores is
    charged (`reused`). The per-sample logs are copied into the results dir (harness.references)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.name = "evaluate_teacher" if role == "teacher" else "evaluate_student_before"

    def devices(self, ctx):
        return ctx.spec.execution.generation_devices()

    def run(self, ctx, cost, part, writer):
        spec, pair = ctx.spec, ctx.pair
        settings = {**eval_settings(pair, spec.limit), "generation": pair.evaluation.to_record()}
        self.key = reference_key(ctx.models[self.role], settings)
        self.folder = reference_folder(self.key)
        self.start, self.count = time.perf_counter(), part[1]
        if self._cached(ctx):
            return
        label = "teacher" if self.role == "teacher" else "student before distillation"
        console.print(f"[bold]Evaluating the {label}[/] (once; cached)")
        ref = ctx.teacher_ref if self.role == "teacher" else ctx.student_ref
        scores = _evaluate(ctx, ref, part, self.folder / "samples", self.folder, self.key)
        cost.backend = ctx.resident.generators[0].backend
        if part[1] == 1:
            self._store(ctx, cost, scores, writer)

    def finish(self, ctx, cost, writer):
        if self._scores(ctx) is None and writer:
            self._store(ctx, cost, _merged(ctx, self.folder / "samples", self.folder, self.count), writer)

    def _scores(self, ctx: RunContext) -> dict[str, TaskScore] | None:
        return ctx.teacher_scores if self.role == "teacher" else ctx.student_before_scores

    def _set(self, ctx: RunContext, scores: dict[str, TaskScore]) -> None:
        scores = {name: published(score, self.folder, ctx.results_dir, self.key) for name, score in scores.items()}
        if self.role == "teacher":
            ctx.teacher_scores = scores
        else:
            ctx.student_before_scores = scores

    def _cached(self, ctx: RunContext) -> bool:
        scores = self.folder / "scores.json"
        if not scores.exists():
            return False
        self._set(ctx, {k: TaskScore(**v) for k, v in json.loads(scores.read_text()).items()})
        saved = self.folder / COST_FILE
        original = PhaseCost(**json.loads(saved.read_text())) if saved.exists() else PhaseCost()
        ctx.ledger.settle(self.name, replace(original, reused=True, cache_key=self.key))
        return True

    def _store(self, ctx: RunContext, cost: PhaseCost, scores: dict[str, TaskScore], writer: bool) -> None:
        ref = ctx.teacher_ref if self.role == "teacher" else ctx.student_ref
        cost.add_work(_sample_tokens(ctx.tokenizer, self.folder, scores), parameter_count(ref), 2)
        built = timed(replace(cost, cache_key=self.key), self.start)
        ctx.ledger.settle(self.name, built)
        if writer:
            atomic_write_json(self.folder / COST_FILE, asdict(built))
            atomic_write_json(self.folder / "scores.json", {k: asdict(v) for k, v in scores.items()})
            self._set(ctx, scores)


def _sample_tokens(tokenizer: PreTrainedTokenizerBase, results_dir: Path, scores: dict[str, TaskScore]) -> int:
    """Prompt + completion tokens of every logged evaluation sample."""
    total = 0
    for score in scores.values():
        for line in (results_dir / score.samples).read_text().splitlines():
            row = json.loads(line)
            total += len(tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"])
    return total


def train_log_path(results_dir: Path, run_id: str) -> Path:
    """The run's per-step training log (written by trainers.loop as training goes)."""
    return results_dir / "samples" / run_id / "train.jsonl"


def training_summary(result: TrainResult, results_dir: Path, run_id: str) -> dict[str, Any]:
    """The record's view of training: steps, each diagnostic's mean over the last tenth of the steps (those that
    computed it), and the dev-slice scores of `--eval-every` by step; the per-step rows are in
    `samples/<run_id>/train.jsonl`."""
    log = train_log_path(results_dir, run_id)
    history = [{k: v for k, v in row.items() if not k.startswith(EVAL_PREFIX)} for row in result.history]
    tail = history[-max(1, len(history) // 10) :]
    names = sorted({name for row in tail for name in row})
    final = {name: sum(row[name] for row in tail if name in row) / sum(name in row for row in tail) for name in names}
    evals = [
        {"step": step, **{k.removeprefix(EVAL_PREFIX): v for k, v in row.items() if k.startswith(EVAL_PREFIX)}}
        for step, row in enumerate(result.history, start=1)
        if any(k.startswith(EVAL_PREFIX) for k in row)
    ]
    return {
        "steps": result.steps,
        "resumed_from": result.resumed_from,
        "final": final,
        "log": str(log.relative_to(results_dir)),
        **({"evals": evals} if evals else {}),
    }


def plan_phases(plan: DataPlan) -> list[Phase]:
    """The phases a run with data plan `plan` goes through, in order (the record is written after them)."""
    data: list[Phase] = [Supervise() if plan.completions == "teacher" else ReferenceData()]
    data += [GenerateSource(source) for source in plan.sources]
    return [*data, Train(), EvaluateStudent(), EvaluateReference("teacher"), EvaluateReference("student")]
