"""One real pair at its real shape (random weights, no download) through the whole pipeline, with per-phase cost.

`python -m bench.gpu_dry_run --pair deepseek` (what bench/gpu_dry_run.sh runs on one GPU) builds the pair's
teacher and student at scale 1 from the shipped configs, supervises a few dozen prompts with vLLM, trains a few
steps, evaluates with vLLM and prints, per phase: wall time, tokens, tokens/s, FLOPs, MFU and peak memory.

MFU = FLOPs / (wall x devices x peak). FLOPs are the record's own counts (2 x parameters per generated or
scored token, 6 x parameters per trained token: attention's sequence-length term is left out, so MFU is a lower
bound). Peak: `--peak-tflops`, default 989 TFLOP/s, the H200's (and H100 SXM's) dense bf16 tensor-core peak from
NVIDIA's data sheet (1979 is the figure with 2:4 sparsity). Peak memory is the record's: torch's allocator peak in
this process, which does not see a vLLM engine running in its own process (bench/gpu_dry_run.sh samples
nvidia-smi for the whole device). On CPU (`--scale small`) it checks the same code at a small shape.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import configure, print_settings
from harness.dryrun import Budget, dry_run
from harness.record_parts import RunCost

H200_BF16_DENSE_TFLOPS = 989.0


def phase_rows(cost: RunCost, peak_tflops: float) -> list[dict[str, Any]]:
    """Per phase: wall s, tokens, tokens/s, FLOPs, MFU (None when the phase was cached or counted no FLOPs)."""
    rows = []
    for name, phase in cost.phases.items():
        wall, devices = phase.wall_s, phase.devices
        timed = wall > 0 and not phase.reused
        mfu = phase.flops / (wall * devices * peak_tflops * 1e12) if timed and phase.flops else None
        rows.append(
            {
                "phase": name,
                "wall_s": wall,
                "tokens": phase.tokens,
                "tokens_per_s": phase.tokens / wall if timed else None,
                "flops": phase.flops,
                "mfu": mfu,
                "peak_gib": phase.peak_memory_bytes / 2**30,
                "reused": phase.reused,
            }
        )
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"{'phase':<10} {'wall s':>8} {'tokens':>9} {'tokens/s':>10} {'TFLOP':>9} {'MFU':>7} {'peak GiB':>9}"]
    for r in rows:
        lines.append(
            f"{r['phase']:<10} {r['wall_s']:>8.1f} {r['tokens']:>9} {fmt(r['tokens_per_s'], '.0f'):>10} "
            f"{r['flops'] / 1e12:>9.2f} {fmt(r['mfu'], '.1%'):>7} {r['peak_gib']:>9.2f}"
            + (" (cached)" if r["reused"] else "")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="deepseek")
    parser.add_argument("--scale", default="1", help="1 = the real shape; 'small' for a CPU check")
    parser.add_argument("--backend", default="vllm")
    parser.add_argument("--method", default="hybrid")
    parser.add_argument("--prompts", type=int, default=64, help="training prompts the teacher supervises")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="teacher completion budget")
    parser.add_argument("--eval-max-new-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, default=16, help="problems per benchmark")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args()
    if args.scale == "small":  # the CPU check: one thread, as every test here
        configure(threads=1)
    budget = Budget(
        train_prompts=args.prompts,
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        eval_max_new_tokens=args.eval_max_new_tokens,
        limit=args.limit,
    )
    print_settings(**vars(args))
    start = time.perf_counter()
    record, path = dry_run(
        args.pair, args.scale, backend=args.backend, results_dir=args.results_dir, method=args.method, budget=budget
    )
    print(format_rows(phase_rows(record.cost, args.peak_tflops)))
    print(f"device: {record.environment.get('device')}; MFU against {args.peak_tflops:g} TFLOP/s per device")
    print(f"total wall {time.perf_counter() - start:.0f} s (model build included); record: {path}")


if __name__ == "__main__":
    main()
