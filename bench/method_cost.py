"""Method cost: device-hours of `hybrid` (offline teacher supervision) against `gkd` (on-policy, online teacher).

Both run through `harness.pipeline.run` on the tiny pair with the same number of student updates (max steps) and
batch size, into a temporary results dir; the figures are read from their records. Each record charges the teacher
supervision phase in full: built fresh, or served from the cache with the cost of its original build (in the default
$HARNESS_CACHE, shared with `harness run`). `hybrid` trains on those cached top-k soft labels; `gkd` samples the
student on a fraction lmbda of its batches and runs the teacher online on every batch (it also reads the cached
teacher completions for its off-policy batches, so its record is charged the same supervision).

Printed: each phase's device-hours, then gkd/hybrid as gkd's training (on-policy sampling + online teacher) over
hybrid's supervision in full plus its training (the comparison the paper reports as 9.7x), both as recorded, training
alone (the limit for many updates, since the supervision is a one-off cost), with the supervision's build split
equally among the runs that used it (`harness.leaderboard.charged_hours`, as the leaderboard charges it) and among
all registered methods that read it; and from how many updates on gkd's training alone costs more than hybrid with
its full supervision. Evaluation is the same work for both (same student, same benchmark) and is shown but left out
of the ratios. Device-hours are wall time x devices: on a shared machine they carry its load, so the two runs are
made back to back and `--reps` alternates their order; a supervision served from the cache carries the load of the
moment it was built.

    PYTHONPATH=. python bench/method_cost.py [--max-steps 150] [--batch-size 32] [--limit 100] [--reps 1]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

from bench.common import configure, median, print_settings
from harness.leaderboard import charged_hours
from harness.pairs import get_pair
from harness.pipeline import RunSpec, run
from harness.records import RunRecord
from trainers.objectives import METHODS

METHODS_COMPARED = ("hybrid", "gkd")


def phase_hours(record: RunRecord, name: str) -> float:
    return float(record.cost["phases"].get(name, {}).get("device_hours", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    pair = get_pair("tiny")
    parser.add_argument("--max-steps", type=int, default=pair.train["max_steps"])
    parser.add_argument("--batch-size", type=int, default=pair.train["batch_size"])
    parser.add_argument("--limit", type=int, default=100, help="arith test docs evaluated (not in the ratio)")
    parser.add_argument("--reps", type=int, default=1, help="pairs of runs, alternating which method goes first")
    args = parser.parse_args()
    configure()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    sharing = sorted(name for name, cls in METHODS.items() if cls.completions == "teacher")
    print_settings(
        pair="tiny",
        methods=list(METHODS_COMPARED),
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        limit=args.limit,
        reps=args.reps,
        gkd_params=METHODS["gkd"].Params().__dict__,
        hybrid_params=METHODS["hybrid"].Params().__dict__,
    )
    records: dict[str, list[RunRecord]] = {name: [] for name in METHODS_COMPARED}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = METHODS_COMPARED if rep % 2 == 0 else METHODS_COMPARED[::-1]
            for method in order:
                spec = RunSpec(
                    pair="tiny",
                    method=method,
                    seed=rep,
                    train_overrides={"max_steps": args.max_steps, "batch_size": args.batch_size},
                    limit=args.limit,
                    results_dir=Path(tmp),
                )
                record, _ = run(spec)
                records[method].append(record)
                print(f"rep {rep} {method}: train {record.cost['phases']['train']['wall_s']:.1f} s", flush=True)
    shared = charged_hours([r for runs in records.values() for r in runs])

    def hours(method: str, phase: str, amortised: bool = False) -> float:
        values = [shared[r.run_id].get(phase, 0.0) if amortised else phase_hours(r, phase) for r in records[method]]
        return median(values)

    print(f"\n{'method':<8} {'supervise h':>12} {'reused':>7} {'train h':>10} {'train s/step':>12} {'evaluate h':>11}")
    for method, runs in records.items():
        supervise = runs[0].cost["phases"].get("supervise", {})
        print(
            f"{method:<8} {hours(method, 'supervise'):>12.2e} {supervise.get('reused', '-')!s:>7} "
            f"{hours(method, 'train'):>10.2e} {hours(method, 'train') * 3600 / args.max_steps:>12.3f} "
            f"{hours(method, 'evaluate'):>11.2e}"
        )
    supervise, gkd_supervise = hours("hybrid", "supervise"), hours("gkd", "supervise")
    hybrid_train, gkd_train = hours("hybrid", "train"), hours("gkd", "train")
    runs_sharing = sum(len(v) for v in records.values())
    amortised = {m: hours(m, "supervise", amortised=True) + hours(m, "train") for m in METHODS_COMPARED}
    ratios = {
        "gkd training / (hybrid supervision in full + training)": gkd_train / (supervise + hybrid_train),
        "both as recorded (gkd's record also charges the supervision it reads)": (gkd_supervise + gkd_train)
        / (supervise + hybrid_train),
        "training alone (the limit as the number of updates grows)": gkd_train / hybrid_train,
        f"supervision split among the {runs_sharing} runs that used it (as the leaderboard charges)": amortised["gkd"]
        / amortised["hybrid"],
        f"gkd training / (hybrid, supervision split among the {len(sharing)} methods that read it)": gkd_train
        / (supervise / len(sharing) + hybrid_train),
    }
    print(f"\ngkd/hybrid device-hours for the same {args.max_steps} student updates (paper: 9.7x):")
    for label, ratio in ratios.items():
        print(f"  {label}: {ratio:.2f}x")
    per_step = (gkd_train - hybrid_train) / args.max_steps
    if per_step > 0:
        print(
            f"gkd training alone costs more than hybrid with its supervision in full from "
            f"{supervise / per_step:.0f} updates on (methods that read it: {', '.join(sharing)})"
        )


if __name__ == "__main__":
    main()
