"""One run, top to bottom: a short driver over the phases of `harness.phases` (supervise, student responses,
train, evaluate the student, evaluate the teacher), then the record (the CLI then rebuilds the leaderboard).

The driver reads the objective's data plan (`trainers.plan.DataPlan`) to choose the phases, runs each inside one
`ledger.phase(...)`, releases what it held when it ends, and owns everything about processes: under `accelerate
launch` / `torchrun` it gives each phase this process's slice, waits for every process at each phase's end, lets the
phase gather the slices, and has the main process alone write the record. Teacher supervision, student responses and
teacher scores are cached and reused; a reused phase is charged with the cost of its original build (see
harness.accounting).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from harness import launch, preflight
from harness.accounting import CostLedger, device_count
from harness.cost_plan import recorded_estimate
from harness.dev_eval import dev_docs
from harness.experiment import Experiment, experiment_key
from harness.identity import data_identity, model_identities
from harness.models import load_tokenizer, resolve
from harness.pairs import Pair, get_pair
from harness.phases import (
    Phase,
    Resident,
    RunContext,
    Supervise,
    plan_phases,
    supervision_temperature,
    training_summary,
)
from harness.record_parts import DataPin, ModelPin, TrainingSummary
from harness.records import RunRecord, environment, new_run_id, read_record, write_record
from harness.resume import RunState, run_folder
from harness.spec import RunSpec
from harness.trial import trial_budget
from kdcore.costs import PhaseCost, cpu_kernels, device_kind
from kdcore.errors import HarnessError, unknown_choice
from kdcore.progress import log_line, progress_label
from tasks import load_task
from tasks.backends import backend_choices
from trainers.loop import TrainConfig
from trainers.objectives import Objective, load_method
from trainers.train_log import Tracking, check_report_to
from trainers.vocab import shared_vocab

TEACHER_SIGNALS = ("topk", "online")


def train_config(pair: Pair, spec: RunSpec) -> TrainConfig:
    values = {"max_length": pair.max_length, **pair.train, **spec.train_overrides, "seed": spec.seed}
    valid = TrainConfig.__dataclass_fields__
    for key in values:
        if key not in valid:
            raise unknown_choice("training setting", key, valid)
    return TrainConfig(**values)


def context(spec: RunSpec, state: RunState, ledger: CostLedger) -> RunContext:
    """The shared context of a run of `spec`: names checked, tokenizers loaded, no model weights loaded."""
    pair, objective, config = check_spec(spec)
    teacher_ref, student_ref = resolve(pair.teacher), resolve(pair.student)
    tokenizer, teacher_tokenizer = load_tokenizer(student_ref), load_tokenizer(teacher_ref)
    for loaded in (tokenizer, teacher_tokenizer):  # as harness.models.load_model prepares them
        if loaded.pad_token_id is None:
            loaded.pad_token = loaded.eos_token
        loaded.padding_side = "left"
    return RunContext(
        spec=spec,
        pair=pair,
        objective=objective,
        plan=objective.data_plan(spec.teacher_signal),  # checked against the spec by check_spec
        config=config,
        state=state,
        ledger=ledger,
        teacher_ref=teacher_ref,
        student_ref=student_ref,
        tokenizer=tokenizer,
        teacher_tokenizer=teacher_tokenizer,
        vocab_rows=aligned_vocab(teacher_ref, student_ref, teacher_tokenizer, tokenizer),
        resident=Resident(spec, pair),
        models=model_identities(pair, teacher_ref, student_ref),
        tracking=tracking(spec, pair, objective, config),
    )


def tracking(spec: RunSpec, pair: Pair, objective: Objective, config: TrainConfig) -> Tracking:
    """Where training's scalars go besides train.jsonl: the tracker `spec.execution.report_to` names, with the run's
    settings (as its record has them); file-writing trackers write under `<results_dir>/tracking`. The run id is set
    by `run`."""
    settings = {"pair": pair.name, "method": objective.name, "seed": spec.seed}
    settings |= recorded_settings(spec, pair, objective, config)
    return Tracking(spec.execution.report_to, Path(spec.execution.results_dir) / "tracking", config=settings)


def supervise(spec: RunSpec, part: tuple[int, int] = (0, 1)) -> Any:
    """Build slice `part` of the teacher supervision a run of `spec` uses, without training (e.g. one slice per
    machine before the runs start); the data once every slice is there, else None."""
    preflight.check_supervise(spec, get_pair(spec.pair, spec.pairs_file))
    ctx = context(spec, RunState(Path(), ""), CostLedger())
    run_phase(ctx, Supervise(), part, launch.is_main_process(), gather=False)
    return ctx.examples


def run_phase(ctx: RunContext, phase: Phase, part: tuple[int, int], writer: bool, gather: bool) -> None:
    """`phase` inside its ledger phase: this process's slice `part` of it; the release of every model and engine it
    held; with `gather` (a launch of several processes), the wait for every process and the gathering of the
    slices. The phase is charged its own peak device memory."""
    if phase.name is None:  # no device work: nothing to time or release
        phase.run(ctx, None, part, writer)
        return
    if writer:
        log_line(f"phase {phase.name}: start ({ctx.run_id})")
    with ctx.ledger.phase(phase.name, phase.devices(ctx)) as cost, progress_label(phase.name):
        try:
            phase.run(ctx, cost, part, writer)
        finally:
            peak = ctx.resident.release()
        if gather:
            launch.barrier()
            phase.finish(ctx, cost, writer)
    charged = ctx.ledger.phases[phase.name]
    if not charged.reused:
        charged.peak_memory_bytes = max(charged.peak_memory_bytes, peak)
    if writer:
        log_line(f"phase {phase.name}: done, {phase_cost_text(charged)}")


def phase_cost_text(cost: PhaseCost) -> str:
    """A phase's cost in a few words: wall time, device-hours, tokens; a cached phase says so."""
    if cost.reused:
        return f"cached (its build: {cost.wall_s:.1f} s, {cost.device_hours:.5f} device-hours)"
    return f"{cost.wall_s:.1f} s, {cost.device_hours:.5f} device-hours, {cost.tokens} tokens"


def recorded_settings(
    spec: RunSpec, pair: Pair, objective: Objective, config: TrainConfig
) -> dict[str, dict[str, Any]]:
    """The settings a run's record carries besides pair, method and seed: what makes two runs comparable. The
    teacher signal is the one the method's data plan uses (none, topk or online), not the command line's."""
    return {
        "method_params": objective.config(),
        "train_config": {
            **config.to_dict(),
            "teacher_signal": objective.data_plan(spec.teacher_signal).teacher_signal,
            "top_k": spec.top_k,
            "limit": spec.limit,
            "supervision_temperature": supervision_temperature(pair, spec),
            "supervision": pair.supervision.to_record(),
            "trace_filter": asdict(pair.trace_filter),
            "evaluation": pair.evaluation.to_record(),
            **({"tuning": spec.tuning} if spec.tuning else {}),
        },
    }


def planned_experiment(spec: RunSpec) -> Experiment:
    """The experiment (harness.experiment) that the record of a run of `spec` will state, before any model loads:
    the pair's build (pinned models, data, trial limits), the method's resolved parameters and the settings."""
    pair, objective, config = check_spec(spec)
    build: dict[str, Any] = {
        "models": model_identities(pair, resolve(pair.teacher), resolve(pair.student)),
        "data": data_identity(pair, spec.limit),
    }
    if trial := trial_budget(spec, pair):
        build["trial"] = trial
    settings = recorded_settings(spec, pair, objective, config)
    return Experiment.of(pair=pair.name, build=build, method=objective.name, seed=spec.seed, **settings)


def working_folder(spec: RunSpec) -> Path:
    """Where a run of `spec` keeps its checkpoint and attempts until its record is written (harness.resume)."""
    return run_folder(experiment_key(planned_experiment(spec)))


def check_spec(spec: RunSpec) -> tuple[Pair, Objective, TrainConfig]:
    """Validate every name in the spec before any model is loaded."""
    pair = get_pair(spec.pair, spec.pairs_file)
    objective = load_method(spec.method, **spec.method_params)
    for name in pair.tasks:
        load_task(name)
    if spec.execution.backend not in backend_choices():
        raise unknown_choice("backend", spec.execution.backend, backend_choices())
    check_teacher_signal(spec.teacher_signal, objective)
    check_report_to(spec.execution.report_to)
    config = train_config(pair, spec)
    if config.eval_every:
        dev_docs(pair)
    launch.check_sharding()
    if launch.world_size() > 1 and spec.execution.generation_devices() > launch.world_size():
        raise HarnessError(
            "--tensor-parallel/--data-parallel are for a single process (vLLM starts its own workers); under "
            "accelerate launch or torchrun every process generates its own shard"
        )
    return pair, objective, config


def chooses_teacher_signal(objective: Objective) -> bool:
    """Whether the method's data plan follows the run's teacher signal (soft labels from the top-k cache or from
    the online teacher), rather than fixing its own."""
    try:
        return all(objective.data_plan(signal).teacher_signal == signal for signal in TEACHER_SIGNALS)
    except HarnessError:  # a signal the method refuses (dld on the top-k cache)
        return False


def check_teacher_signal(signal: str | None, objective: Objective) -> None:
    """Refuse a teacher signal the method would not use: an unknown one, one for a method that reads none, or
    `topk` for a method whose data plan needs the online teacher (None: the method's own, always accepted)."""
    if signal is None:
        return
    if signal not in TEACHER_SIGNALS:
        raise unknown_choice("teacher signal", signal, TEACHER_SIGNALS)
    if chooses_teacher_signal(objective):
        return
    used = objective.data_plan(signal).teacher_signal
    if used == "none":
        raise HarnessError(f"--teacher-signal {signal}: method {objective.name!r} reads no teacher signal; drop it")
    if used != signal:
        raise HarnessError(
            f"--teacher-signal {signal}: method {objective.name!r} trains with the {used} teacher (its data plan); "
            "drop --teacher-signal"
        )


def pin_cpu_threads(pair: Pair) -> None:
    """On a CPU-only machine, the pair's torch thread count (its trained weights depend on it), when it sets one."""
    if pair.cpu_threads and not torch.cuda.is_available():
        torch.set_num_threads(pair.cpu_threads)


def run(spec: RunSpec) -> tuple[RunRecord, Path] | None:
    """Run one distillation experiment end to end and write its record; returns the record and its path.

    A run that was stopped resumes from its last checkpoint (see harness.resume). Under `accelerate launch` /
    `torchrun` every process builds a slice of the supervision, trains its share of each batch and evaluates a
    shard of the docs; the main process writes the record and gets it back, the others get None."""
    pair, objective, _ = check_spec(spec)
    preflight.check_run(spec, pair, objective.data_plan(spec.teacher_signal).needs_teacher_model)
    pin_cpu_threads(pair)
    launch.init()
    if launch.world_size() > 1 and spec.execution.backend == "auto":
        spec = spec.run_in(backend="transformers")  # vLLM would want the GPUs the training processes hold
    state = RunState.begin(working_folder(spec), lambda: new_run_id(pair.name, objective.name, spec.seed))
    if state.record and Path(state.record).exists():  # killed after writing its record: only clean up
        state.close()
        if not launch.is_main_process():
            return None
        return read_record(state.record), Path(state.record)
    ctx = context(spec, state, CostLedger())
    ctx.tracking.run_name = state.run_id
    part, writer = launch.part(), launch.is_main_process()
    if trial := trial_budget(spec, pair):
        ctx.training["trial"] = trial
    if ctx.config.eval_every:
        ctx.training["eval_every"] = ctx.config.eval_every
        ctx.training["dev_slice"] = {"docs": len(dev_docs(ctx.pair)[0]), "kind": dev_docs(ctx.pair)[1]}
    for phase in plan_phases(ctx.plan):
        run_phase(ctx, phase, part, writer, gather=launch.world_size() > 1)
        state.save(ctx.ledger)
    if not writer:
        return None
    return record(ctx)


def record(ctx: RunContext) -> tuple[RunRecord, Path]:
    """Write the run's record (its cost over all attempts) and close its working folder."""
    spec, state = ctx.spec, ctx.state
    state.save(ctx.ledger)
    result = RunRecord(
        pair=ctx.pair.name,
        method=ctx.objective.name,
        seed=spec.seed,
        **recorded_settings(spec, ctx.pair, ctx.objective, ctx.config),
        teacher=ctx.pair.teacher,
        student=ctx.pair.student,
        scores=ctx.scores,
        teacher_scores=ctx.teacher_scores,
        student_before_scores=ctx.student_before_scores,
        models={role: ModelPin.from_dict(pin, role) for role, pin in ctx.models.items()},
        data=DataPin.from_dict(data_identity(ctx.pair, spec.limit)),
        cost=state.total_cost().run_cost(),
        environment=environment(device_kind(), device_count(), cpu_kernels()),
        training=TrainingSummary.from_dict(training_summary(ctx.result, ctx.results_dir, ctx.run_id) | ctx.training),
        run_id=ctx.run_id,
        attempts=state.attempts,
        estimate=recorded_estimate(spec),
    )
    path = write_record(result, ctx.results_dir)
    state.recorded(path)
    state.close()
    return result, path


def aligned_vocab(teacher_ref: str, student_ref: str, teacher_tokenizer: Any, student_tokenizer: Any) -> int:
    """The vocabulary rows teacher and student are compared on (`trainers.vocab.shared_vocab`), with each model's
    row count read from its config, without loading weights."""
    from transformers import AutoConfig

    rows = [AutoConfig.from_pretrained(ref).vocab_size for ref in (teacher_ref, student_ref)]
    return shared_vocab(teacher_tokenizer, student_tokenizer, *rows)
