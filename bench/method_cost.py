"""Method cost: device-hours, CPU seconds and FLOPs of `hybrid` (offline teacher supervision) against `gkd`
(on-policy, online teacher), at one or more completion budgets.

Both run through `harness.pipeline.run` on the tiny pair with the same number of student updates (max steps) and
batch size, into a temporary results dir; the figures are read from their records. Each record charges the teacher
supervision phase in full: built fresh, or served from the cache with the cost of its original build (in the default
$HARNESS_CACHE, shared with `harness run`). `hybrid` trains on those cached top-k soft labels; `gkd` samples the
student on a fraction lmbda of its batches and runs the teacher online on every batch (it also reads the cached
teacher completions for its off-policy batches, so its record is charged the same supervision).

Completion length. `--max-new-tokens 8 16 24 48` runs the comparison once per completion budget: the tiny pair as
harness/pairs.toml has it, with its `max_new_tokens` (the teacher's supervision budget, and gkd's on-policy budget,
which defaults to the pair's) set to each value, through a pairs file written to a temporary folder. The tiny teacher
writes answers of 19-44 tokens, so budgets below that cut completions (the tiny pair keeps budget-hit traces:
`drop_truncated = false`) and budgets above it change little; a cut completion costs per token what a whole one
does. Evaluation keeps the task's own budget (it is left out of the ratios). Each budget's supervision is its own
cache entry.

Costs. Device-hours as the records have them (wall time x devices: on a shared machine they carry its load, so the
two runs of a budget are made back to back and `--reps` alternates their order); the process CPU seconds of each
phase, measured here around the ledger's phases (not in the records; steadier than wall time on shared cores, and all
of the work, since the transformers backend generates in this process); and the records' FLOPs, estimates
(`kdcore.costs.PhaseCost.add_work`: 2 x teacher parameters per supervision token, although the transformers path
makes two passes, generation and the top-k forward; 6 x student + 2 x teacher parameters per trained token), which
leave out the student's on-policy sampling: the last cost adds it, modelled as 2 x student parameters x the tokens of
the sampled batches. A reused supervision is charged the cost of its build; its CPU seconds are known only when this
process built it (use an empty $HARNESS_CACHE for that).

Printed per budget: each phase's costs, then gkd/hybrid in each cost as gkd's training (on-policy sampling + online
teacher) over hybrid's supervision in full plus its training (the comparison the paper reports as 9.7x), both as
recorded, training alone (the limit for many updates, since the supervision is a one-off cost), with the
supervision's build split equally among the runs that used it (`harness.results.costs.charged`, as the leaderboard
charges it) and among all registered methods that read it; and from how many updates on gkd's training alone costs
more than hybrid with its full supervision. With two or more budgets: the headline and training-alone ratios against
the mean completion length measured (and at the pair's default number of updates, from the measured cost per
update), and a modelled extrapolation: each cost (supervision, hybrid's and gkd's training per update) fitted as
a + b x completion tokens over the budgets that cut every completion (mean completion >= 95% of the budget, so that
teacher and student completions have the same length), checked against the other budgets, then the ratio at longer
completions (the tiny models have 256 positions and the pair trains at most 128 tokens: those lengths are the linear
model only, not runs).

    PYTHONPATH=. python bench/method_cost.py [--max-steps 150] [--batch-size 32] [--limit 100] [--reps 1]
        [--max-new-tokens 8 16 24 48]
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import datasets
import transformers

from bench.common import configure, median, print_settings
from harness.accounting import CostLedger
from harness.models import load_tokenizer, resolve
from harness.pairs import DEFAULT_PAIRS_FILE, SCHEMA_VERSION, get_pair
from harness.phases import parameter_count
from harness.pipeline import RunSpec, run
from harness.records import RunRecord
from harness.results.costs import charged
from harness.spec import Execution
from harness.supervise import prompt_ids
from tasks import load_task
from trainers.objectives import METHODS, load_method

METHODS_COMPARED = ("hybrid", "gkd")
COSTS = {  # cost key -> label; "flops_sampled" is the records' FLOPs plus the modelled on-policy sampling
    "device_hours": "device-hours",
    "cpu_s": "CPU s",
    "flops": "FLOPs",
    "flops_sampled": "FLOPs+sampling",
}
HEADLINE = "gkd training / (hybrid supervision in full + training)"
TRAINING = "training alone (the limit as the number of updates grows)"
FITTED = ("supervise", "hybrid_train_per_step", "gkd_train_per_step")  # the costs the modelled lines fit
EXTRAPOLATED = (64, 128, 256, 512, 1024)  # mean completion tokens of the modelled lines
CUT = 0.95  # a budget cuts every completion when the mean completion is at least this share of it


def phase_cost(record: RunRecord, name: str, cost: str = "device_hours") -> float:
    """Phase `name`'s `cost` (a PhaseCost field, or `cpu_s`: this benchmark's own measurement); 0 without it."""
    phase = record.cost.phases.get(name)
    return float(getattr(phase, cost, None) or 0.0)


def budget_pairs_file(budget: int, folder: Path) -> Path:
    """A pairs file holding only the tiny pair of harness/pairs.toml (its tables, in order) with
    `max_new_tokens = budget`; checked to load as that pair with the budget changed and nothing else."""
    sections = re.split(r"^(?=\[)", DEFAULT_PAIRS_FILE.read_text(), flags=re.M)
    tiny = [part for part in sections if re.match(r"\[{1,2}pairs\.tiny[.\]]", part)]
    body, found = re.subn(r"^max_new_tokens = \d+$", f"max_new_tokens = {budget}", "".join(tiny), flags=re.M)
    if found != 1:
        raise SystemExit(f"[pairs.tiny] in {DEFAULT_PAIRS_FILE} has no single `max_new_tokens = N` line")
    path = folder / f"tiny-{budget}.toml"
    path.write_text(f"schema_version = {SCHEMA_VERSION}\n\n{body}")
    shipped = get_pair("tiny")
    expected = replace(shipped, max_new_tokens=budget, supervision=replace(shipped.supervision, max_new_tokens=budget))
    if get_pair("tiny", path) != expected:
        raise SystemExit(f"{path} does not load as the tiny pair with max_new_tokens = {budget}")
    return path


@contextmanager
def cpu_per_phase() -> Iterator[dict[str, float]]:
    """Process CPU seconds of each ledger phase (`CostLedger.phase`) run while inside, by phase name."""
    original = CostLedger.phase
    seconds: dict[str, float] = {}

    @contextmanager
    def phase(self: CostLedger, name: str, devices: int | None = None) -> Iterator[Any]:
        start = time.process_time()
        try:
            with original(self, name, devices) as cost:
                yield cost
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.process_time() - start

    CostLedger.phase = phase
    try:
        yield seconds
    finally:
        CostLedger.phase = original


def measure(budget: int, args: argparse.Namespace, folder: Path) -> dict[str, list[RunRecord]]:
    """`args.reps` pairs of runs (hybrid, gkd; alternating which goes first) at completion budget `budget`; each
    record's phases get `cpu_s` (a reused supervision: its build's, when one of these runs built it, else None)."""
    pairs_file = budget_pairs_file(budget, folder)
    records: dict[str, list[RunRecord]] = {name: [] for name in METHODS_COMPARED}
    for rep in range(args.reps):
        order = METHODS_COMPARED if rep % 2 == 0 else METHODS_COMPARED[::-1]
        for method in order:
            spec = RunSpec(
                pair="tiny",
                method=method,
                seed=rep,
                train_overrides={"max_steps": args.max_steps, "batch_size": args.batch_size},
                limit=args.limit,
                pairs_file=pairs_file,
                execution=Execution(results_dir=folder / f"results-{budget}"),
            )
            with cpu_per_phase() as seconds:
                record, _ = run(spec)
            for name in ("supervise", "train", "evaluate"):  # CPU seconds: this benchmark's, kept on the phase
                if phase := record.cost.phases.get(name):
                    phase.cpu_s = None if phase.reused else seconds.get(name)
            records[method].append(record)
            train = record.cost.phases["train"]
            print(f"budget {budget} rep {rep} {method}: train {train.wall_s:.1f} s, {train.cpu_s:.1f} CPU s")
    built = {
        phase.cache_key: phase.cpu_s
        for runs in records.values()
        for r in runs
        if (phase := r.cost.phases.get("supervise")) and not phase.reused
    }
    for runs in records.values():
        for r in runs:
            if (phase := r.cost.phases.get("supervise")) and phase.reused:
                phase.cpu_s = built.get(phase.cache_key)
    return records


def views(
    records: dict[str, list[RunRecord]], cost: str, steps: int, sharing: list[str], extra: dict[str, float]
) -> dict[str, Any]:
    """gkd/hybrid in `cost` (medians over repetitions) the ways the module docstring lists, and the costs behind the
    headline; `extra[method]` is added to that method's training (the modelled on-policy sampling FLOPs)."""
    shared = charged([r for runs in records.values() for r in runs], cost)

    def total(method: str, phase: str, amortised: bool = False) -> float:
        values = [
            shared[r.run_id].get(phase, 0.0) if amortised else phase_cost(r, phase, cost) for r in records[method]
        ]
        return median(values) + (extra.get(method, 0.0) if phase == "train" else 0.0)

    supervise, gkd_supervise = total("hybrid", "supervise"), total("gkd", "supervise")
    hybrid_train, gkd_train = total("hybrid", "train"), total("gkd", "train")
    runs_sharing = sum(len(v) for v in records.values())
    amortised = {m: total(m, "supervise", amortised=True) + total(m, "train") for m in METHODS_COMPARED}
    ratios = {
        HEADLINE: gkd_train / (supervise + hybrid_train),
        "both as recorded (gkd's record also charges the supervision it reads)": (gkd_supervise + gkd_train)
        / (supervise + hybrid_train),
        TRAINING: gkd_train / hybrid_train,
        f"supervision split among the {runs_sharing} runs that used it (as the leaderboard charges)": amortised["gkd"]
        / amortised["hybrid"],
        f"gkd training / (hybrid, supervision split among the {len(sharing)} methods that read it)": gkd_train
        / (supervise / len(sharing) + hybrid_train),
    }
    return {
        "ratios": ratios,
        "breakeven_updates": supervise / ((gkd_train - hybrid_train) / steps) if gkd_train > hybrid_train else None,
        "supervise": supervise,
        "hybrid_train_per_step": hybrid_train / steps,
        "gkd_train_per_step": gkd_train / steps,
    }


def report(
    budget: int, records: dict[str, list[RunRecord]], args: argparse.Namespace, context: dict[str, Any]
) -> dict[str, Any]:
    """Print one budget's phase table and ratios; return its summary (mean lengths and each cost's views)."""
    steps, batch = args.max_steps, args.batch_size
    trained = {m: median([phase_cost(r, "train", "tokens") for r in runs]) for m, runs in records.items()}
    supervised = median([phase_cost(r, "supervise", "tokens") for r in records["hybrid"]])
    completion = (supervised - context["prompt_tokens"]) / context["prompts"]
    per_example = {m: tokens / (steps * batch) - context["mean_prompt"] for m, tokens in trained.items()}
    # modelled: the student's sampling of the on-policy batches, 2 x its parameters per token of those batches
    sampled = median([r.training.on_policy_batches or 0 for r in records["gkd"]])
    sampling_flops = 2.0 * context["student_params"] * sampled * batch * (context["mean_prompt"] + per_example["gkd"])
    print(
        f"\nbudget {budget}: mean completion tokens: supervision {completion:.1f}, trained hybrid "
        f"{per_example['hybrid']:.1f}, gkd {per_example['gkd']:.1f} (prompt {context['mean_prompt']:.1f}); gkd "
        f"sampled {sampled:.0f} of {steps} batches"
    )
    print(f"{'method':<7} {'phase':<10} {'reused':>6} {'wall s':>8} {'CPU s':>8} {'s/step':>7} {'FLOP':>9}")
    for method, runs in records.items():
        for name in ("supervise", "train", "evaluate"):
            phase = runs[0].cost.phases.get(name)
            wall = median([phase_cost(r, name, "wall_s") for r in runs])
            cpus = [getattr(r.cost.phases[name], "cpu_s", None) for r in runs if name in r.cost.phases]
            cpu = f"{median(cpus):.1f}" if cpus and None not in cpus else "-"
            per_step = f"{wall / steps:.3f}" if name == "train" else ""
            print(
                f"{method:<7} {name:<10} {phase.reused if phase else '-'!s:>6} {wall:>8.1f} {cpu:>8} {per_step:>7} "
                f"{median([phase_cost(r, name, 'flops') for r in runs]):>9.2e}"
            )
    known = all(
        getattr(r.cost.phases["supervise"], "cpu_s", None) is not None for runs in records.values() for r in runs
    )
    summary: dict[str, Any] = {"budget": budget, "completion": completion, "per_example": per_example}
    for cost in COSTS:
        if cost == "cpu_s" and not known:
            continue
        source, extra = ("flops", {"gkd": sampling_flops}) if cost == "flops_sampled" else (cost, {})
        summary[cost] = views(records, source, steps, context["sharing"], extra)
    shown = [cost for cost in COSTS if cost in summary]
    print(
        f"gkd/hybrid for the same {steps} student updates (paper: 9.7x); on-policy sampling {sampling_flops:.2e} FLOP"
    )
    print(f"  {'':<86}" + "".join(f"{COSTS[cost]:>15}" for cost in shown))
    for name in summary[shown[0]]["ratios"]:
        print(f"  {name:<86}" + "".join(f"{summary[cost]['ratios'][name]:>14.2f}x" for cost in shown))
    cells = [f"{COSTS[c]} {summary[c]['breakeven_updates']:.0f}" for c in shown if summary[c]["breakeven_updates"]]
    print(f"  gkd training alone costs more than hybrid with its supervision in full from: {', '.join(cells)} updates")
    if not known:
        print("  (CPU s left out: the supervision was built by an earlier process; use an empty $HARNESS_CACHE)")
    return summary


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys on xs."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def modelled_ratio(fits: dict[str, tuple[float, float]], steps: int, length: float) -> float:
    """The headline ratio at `length` completion tokens from the fitted (intercept, slope) of each cost."""
    return headline_ratio({key: a + b * length for key, (a, b) in fits.items()}, steps)


def headline_ratio(cost: dict[str, float], steps: int) -> float:
    """gkd's training over hybrid's supervision in full plus its training, for `steps` updates of the costs given."""
    return steps * cost["gkd_train_per_step"] / (cost["supervise"] + steps * cost["hybrid_train_per_step"])


def by_length(summaries: list[dict[str, Any]], steps: int, default_steps: int) -> None:
    """The headline and training-alone ratios against the completion length measured (and the headline at the
    pair's default number of updates, from the measured costs), and their linear extrapolation (modelled)."""
    shown = [cost for cost in COSTS if all(cost in s for s in summaries)]
    print(f"\ngkd/hybrid by completion length: headline at {steps} updates (measured) / at {default_steps} (derived:")
    print(f"the measured supervision + {default_steps} x the measured cost per update) / training alone")
    print(f"{'budget':>6} {'completion':>10}" + "".join(f"{COSTS[cost]:>22}" for cost in shown))
    for s in summaries:
        cells = [
            f"{s[c]['ratios'][HEADLINE]:.2f} / {headline_ratio(s[c], default_steps):.2f} / "
            f"{s[c]['ratios'][TRAINING]:.2f}"
            for c in shown
        ]
        print(f"{s['budget']:>6} {s['completion']:>10.1f}" + "".join(f"{cell:>22}" for cell in cells))
    fitted = [s for s in summaries if s["completion"] >= CUT * s["budget"]]
    if len({s["completion"] for s in fitted}) < 2:
        print("(fewer than two budgets cut every completion: no linear model)")
        return
    xs = [s["completion"] for s in fitted]
    print(
        f"modelled: each cost fitted as a + b x L (L = mean completion tokens) over budgets "
        f"{[s['budget'] for s in fitted]}; at L tokens, headline at {steps} / at {default_steps} updates / "
        "training alone"
    )
    for cost in shown:
        fits = {key: fit_line(xs, [s[cost][key] for s in fitted]) for key in FITTED}
        print(f"  {COSTS[cost]}: fitted " + ", ".join(f"{key} {a:.3g} + {b:.3g} L" for key, (a, b) in fits.items()))
        points = {f"{length}": {key: a + b * length for key, (a, b) in fits.items()} for length in EXTRAPOLATED}
        points["as L grows"] = {key: b for key, (_, b) in fits.items()}
        print(
            "    "
            + "; ".join(
                f"{label}: {headline_ratio(at, steps):.2f} / {headline_ratio(at, default_steps):.2f} / "
                f"{at['gkd_train_per_step'] / at['hybrid_train_per_step']:.2f}"
                for label, at in points.items()
            )
        )
        checks = [
            f"{s['budget']}: {modelled_ratio(fits, steps, s['completion']):.2f}x (measured "
            f"{s[cost]['ratios'][HEADLINE]:.2f}x)"
            for s in summaries
            if s not in fitted
        ]
        if checks:
            print(f"    check, headline at {steps} updates at budget {', '.join(checks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    pair = get_pair("tiny")
    parser.add_argument("--max-steps", type=int, default=pair.train["max_steps"])
    parser.add_argument("--batch-size", type=int, default=pair.train["batch_size"])
    parser.add_argument("--limit", type=int, default=100, help="arith test docs evaluated (not in the ratio)")
    parser.add_argument("--reps", type=int, default=1, help="pairs of runs, alternating which method goes first")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        nargs="+",
        default=[pair.max_new_tokens],
        help="completion budgets (teacher supervision and gkd's on-policy sampling), one comparison each",
    )
    args = parser.parse_args()
    configure()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    teacher = resolve(pair.teacher)
    prompts = prompt_ids(pair, load_task(pair.train_task), load_tokenizer(teacher))
    context = {
        "sharing": sorted(name for name in METHODS if load_method(name).data_plan().completions == "teacher"),
        "prompts": len(prompts),
        "prompt_tokens": sum(map(len, prompts)),
        "mean_prompt": sum(map(len, prompts)) / len(prompts),
        "student_params": parameter_count(resolve(pair.student)),
    }
    print_settings(
        pair="tiny",
        methods=list(METHODS_COMPARED),
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        limit=args.limit,
        reps=args.reps,
        max_new_tokens=args.max_new_tokens,
        gkd_params=METHODS["gkd"].Params().__dict__,
        hybrid_params=METHODS["hybrid"].Params().__dict__,
        teacher_params=parameter_count(teacher),
        student_params=context["student_params"],
    )
    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.max_new_tokens:
            summaries.append(report(budget, measure(budget, args, Path(tmp)), args, context))
    if len(summaries) > 1:
        by_length(summaries, args.max_steps, pair.train["max_steps"])


if __name__ == "__main__":
    main()
