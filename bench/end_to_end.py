"""End to end: wall time of `harness run --method hybrid --pair tiny` with a cold cache and with a warm one.

Cold: a fresh, empty $HARNESS_CACHE, so the run builds everything it needs once: the teacher supervision (most of
the cold time) and the reference scores (teacher, student before distillation); the tiny pair itself is shipped and
never built. Warm: the same command again on that cache, so only training, evaluating the student, the record
and the leaderboard remain. Each run is a separate `python -m harness run` process into its own results dir; the
per-phase wall seconds are read from its record. The runs use the threads the pair pins (`cpu_threads` in
harness/pairs.toml, 1 for the tiny pair).
`--skip-cold` times only the warm run, on the default cache (or `--cache`), which must then hold the supervision
already (else that run is cold too, and the script says so).

    PYTHONPATH=. python bench/end_to_end.py [--skip-cold] [--cache DIR] [--max-steps N] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import configure, print_settings
from harness.cache import cache_root
from harness.pairs import get_pair
from harness.records import load_records

REPO = Path(__file__).resolve().parent.parent


def timed_run(cache: Path, results: Path, extra: list[str]) -> tuple[float, dict[str, float]]:
    """Wall seconds of one `harness run` process and the wall seconds of each phase in its record."""
    command = [sys.executable, "-m", "harness", "run", "--method", "hybrid", "--pair", "tiny", "--results-dir"]
    env = {**os.environ, "HARNESS_CACHE": str(cache), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([*command, str(results), *extra], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"harness run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    records, _ = load_records(results)
    phases = records[-1].cost.phases
    return seconds, {name: phase.wall_s for name, phase in phases.items() if not phase.reused}


def show(label: str, seconds: float, phases: dict[str, float], rest: str) -> None:
    detail = ", ".join(f"{name} {wall:.0f} s" for name, wall in phases.items())
    print(f"{label}: {seconds:.0f} s wall ({detail}; other {seconds - sum(phases.values()):.0f} s: {rest})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-cold", action="store_true", help="time only the warm run (on --cache)")
    parser.add_argument("--cache", type=Path, help="cache for --skip-cold (default: $HARNESS_CACHE or its default)")
    parser.add_argument("--max-steps", type=int, help="passed to harness run (default: the pair's)")
    parser.add_argument("--limit", type=int, help="passed to harness run (default: the whole test split)")
    args = parser.parse_args()
    configure()
    extra = [*(["--max-steps", str(args.max_steps)] if args.max_steps else [])]
    extra += ["--limit", str(args.limit)] if args.limit else []
    print_settings(
        command="harness run --method hybrid --pair tiny " + " ".join(extra),
        skip_cold=args.skip_cold,
        cache=args.cache or ("fresh temp dir" if not args.skip_cold else cache_root()),
        harness_threads=f"the pair's cpu_threads ({get_pair('tiny').cpu_threads})",
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.skip_cold:
            cache = args.cache or cache_root()
            os.environ["HARNESS_CACHE"] = str(cache)
            if not (Path(cache) / "supervision").exists():
                print(f"note: {cache} holds no supervision yet, so this 'warm' run builds it (a cold run)")
        else:
            cache = Path(tmp, "cache")
            cold = timed_run(cache, Path(tmp, "cold"), extra)
            show("cold (empty cache)", *cold, "supervision build, reference scores, start-up, loading, leaderboard")
        warm = timed_run(cache, Path(tmp, "warm"), extra)
        show("warm (cache filled)", *warm, "start-up, loading, leaderboard")
        if not args.skip_cold:
            print(f"cold/warm = {cold[0] / warm[0]:.1f}x")


if __name__ == "__main__":
    main()
