"""`harness sweep --plan`, `--status` and `--executor`: the tables they print and the summary of a submission."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from harness import scheduler
from kdcore.errors import HarnessError
from kdcore.progress import console


@dataclass(frozen=True)
class ScheduleOptions:
    executor: str | None = None
    plan: bool = False
    status: bool = False
    cluster_config: Path | None = None
    partition: str | None = None
    account: str | None = None
    device: str | None = None
    max_parallel: int | None = None
    wait: bool = False


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def print_plan(specs: list[Any], results_dir: Path, device: str) -> dict[str, Any]:
    """The plan's tables: per cell, per pair's shared phases, and the totals with the estimate-vs-measured check."""
    from harness.cost_plan import throughput_for

    rates = throughput_for(device)
    rows, totals = scheduler.plan_rows(specs, results_dir, device)
    phases = sorted({name for row in rows for name in row["phases"]})
    table = Table(title=f"plan on {device}: estimated device-hours per phase (GPU-hours on a GPU)")
    for column in ("cell", "state", *phases, "total", "FLOPs", "train state GB", "measured h", "measured/est."):
        table.add_column(column)
    for row in rows:
        measured = row.get("measured")
        ratio = "-"
        if measured and measured["estimated_device_hours"]:
            ratio = f"{measured['device_hours'] / measured['estimated_device_hours']:.2f}"
        table.add_row(
            row["cell"],
            row["state"],
            *(_hours(row["phases"].get(name)) for name in phases),
            _hours(row["device_hours"]),
            f"{row['flops']:.3g}",
            f"{row['training_state_gb']:.3g}",
            _hours(measured["device_hours"]) if measured else "-",
            ratio,
        )
    console.print(table)
    shared = Table(title="built once per pair and cached (every cell reuses them)")
    for column in ("pair", "phase", "device-hours", "FLOPs"):
        shared.add_column(column)
    for pair in totals["pairs"]:
        for name, hours in pair["phases"].items():
            shared.add_row(pair["pair"], name, _hours(hours), "")
        hours = sum(h or 0.0 for h in pair["phases"].values())
        shared.add_row(pair["pair"], "all shared", _hours(hours), f"{pair['flops']:.3g}")
    console.print(shared)
    console.print(
        f"total: {_hours(totals['device_hours'])} device-hours, {totals['flops']:.3g} FLOPs "
        f"for {totals['cells']} cells; "
        f"{totals['done']} done, {_hours(totals['to_run_device_hours'])} device-hours still to run",
        highlight=False,
    )
    measured = [r["measured"] for r in rows if r.get("measured")]
    if measured:
        hours = sum(m["device_hours"] for m in measured)
        estimated = sum(m["estimated_device_hours"] or 0.0 for m in measured)
        flops = sum(m["flops"] for m in measured) / max(sum(m["estimated_flops"] for m in measured), 1.0)
        console.print(
            f"check on the {len(measured)} cells with a record (their own phases): measured / estimated device-hours "
            f"{hours / estimated if estimated else float('nan'):.2f}, FLOPs {flops:.2f}",
            highlight=False,
        )
    for kind in ("train", "generate"):
        figure = getattr(rates, kind)
        console.print(f"{rates.kind} {kind}: {figure:.3g} FLOP/s ({rates.sources[kind]})", highlight=False)
    if rates.memory_gb and any(r["training_state_gb"] > 0.8 * rates.memory_gb for r in rows):
        console.print(
            f"[yellow]warning:[/] some cells' training state exceeds 80% of one device's {rates.memory_gb} GB: "
            "train them with fsdp.yaml / zero3.yaml or --lora-r"
        )
    return totals


def print_status(states: list[scheduler.CellState]) -> None:
    table = Table(title="sweep status")
    for column in ("cell", "state", "job", "log", "error"):
        table.add_column(column)
    for s in states:
        log = s.log if s.state in ("failed", "running") else ""
        table.add_row(s.cell, s.state, s.job_id or "-", log, s.error or "")
    console.print(table)
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    console.print("; ".join(f"{n} {state}" for state, n in counts.items()))


def scheduled_sweep(specs: list[Any], results_dir: Path, options: ScheduleOptions) -> None:
    """Plan, status or submission of the sweep `specs` (see harness.scheduler)."""
    from kdcore.costs import device_kind

    config = scheduler.load_cluster_config(options.cluster_config, options.partition, options.account)
    device = options.device or config.device or device_kind()
    if options.max_parallel is not None and options.max_parallel <= 0:
        raise HarnessError(f"--max-parallel {options.max_parallel}: must be a positive number of jobs")
    if options.plan:
        print_plan(specs, results_dir, device)
        return
    if options.status:
        print_status(scheduler.status(specs, results_dir))
        return
    if options.executor not in scheduler.EXECUTORS:
        raise HarnessError(f"unknown executor {options.executor!r}; valid: {', '.join(scheduler.EXECUTORS)}")
    submitted = scheduler.submit(specs, results_dir, options.executor, config, options.max_parallel, device)
    for cell, why in submitted.skipped.items():
        console.print(f"not submitted: {cell} ({why})", highlight=False)
    console.print(f"sweep: {len(submitted.cells)} cells submitted, {len(submitted.skipped)} not submitted")
    failed = dict(submitted.failed)
    if options.executor == "slurm" and options.wait:
        states = scheduler.wait(specs, results_dir)
        failed = {s.cell: s for s in states if s.state == "failed"}
        print_status(states)
    if options.executor == "local" and submitted.cells:
        from harness.results.build import build_leaderboard

        for output in build_leaderboard(results_dir):
            console.print(f"leaderboard: {output}")
    for state in failed.values():
        console.print(f"[red]failed:[/] {state.cell}: {state.error} (log: {state.log})", highlight=False)
    if failed:
        from harness.sweep import SweepIncomplete

        raise SweepIncomplete(f"{len(failed)} of {len(specs)} cells failed; run the same command again to retry them")
