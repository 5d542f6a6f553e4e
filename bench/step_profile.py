"""Where a training step's time goes: torch.profiler over steps of our KD variants and of their floors.

Builds the shapes of bench/train_throughput.py (vocab 32k, 8.6M student, 19.8M teacher, batch 4 x (32 + 96) tokens,
top-32 soft labels) and profiles `--steps` steps of each: the sft floor, the no-grad teacher forward, soft KD on the
top-k cache and with the online teacher, hybrid on the cache, each a full step as `trainers.loop.train` takes it
(batch read from the Arrow data set, collate, loss, backward, clipping, fused AdamW). It prints each variant's CPU
seconds per step and its operators by self CPU time, then the operators whose time the online step spends above its
floor (sft step + teacher forward), i.e. where the remaining gap goes.

    PYTHONPATH=. python bench/step_profile.py [--vocab 32000] [--steps 3] [--rows 12] [--student H,L,A,I]
        [--teacher H,L,A,I]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import configure, print_settings, random_llama
from bench.train_throughput import PAD, make_examples, teacher_forward, topk_dataset
from trainers.batch import collate, read_rows
from trainers.loop import row_terms
from trainers.objectives import load_method


def step_fn(student, teacher, data, method: str, online: bool, batch: int, vocab: int) -> Callable[[int], None]:
    """One training step of `method` on batch `i` of `data`, as the loop runs it (one process, no accelerate)."""
    objective = load_method(method)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, fused=True)

    def step(i: int) -> None:
        rows = read_rows(data, [(i * batch + j) % len(data) for j in range(batch)])
        terms = row_terms(objective, student, collate(rows, PAD), 0.0, 2048, teacher if online else None, vocab, False)
        terms["loss"].mean().backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return step


def profiled(step: Callable[[int], None], steps: int) -> tuple[float, dict[str, float]]:
    """CPU seconds per step (unprofiled, after a warm-up step) and self CPU seconds per step by operator."""
    step(0)
    start = time.process_time()
    for i in range(steps):
        step(i + 1)
    seconds = (time.process_time() - start) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(i + 1)
    ops: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        ops[event.key] += event.self_cpu_time_total / 1e6 / steps
    return seconds, dict(ops)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=12, help="operators shown per variant")
    parser.add_argument("--student", default="128,2,4,384", help="hidden,layers,heads,intermediate")
    parser.add_argument("--teacher", default="256,4,4,768", help="hidden,layers,heads,intermediate")
    args = parser.parse_args(argv)
    configure(1)
    print_settings(vocab=args.vocab, batch=args.batch, steps=args.steps, student=args.student, teacher=args.teacher)
    student = random_llama(args.vocab, *(int(x) for x in args.student.split(",")), seed=0)
    teacher = random_llama(args.vocab, *(int(x) for x in args.teacher.split(",")), seed=1)
    teacher = teacher.eval().requires_grad_(False)
    examples = make_examples(args.batch * (2 * args.steps + 1), 32, 96, args.vocab, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = topk_dataset(teacher, examples, 32, args.vocab, Path(tmp, "topk"))
        tokens = cache.remove_columns(["topk_ids", "topk_logprobs"])
        batches = [collate(examples[i : i + args.batch], PAD) for i in range(0, len(examples), args.batch)]
        variants = {
            "ours sft": step_fn(student, teacher, tokens, "sft", False, args.batch, args.vocab),
            "teacher forward": lambda i: teacher_forward(teacher, batches[i % len(batches)], args.vocab),
            "ours soft topk": step_fn(student, teacher, cache, "soft", False, args.batch, args.vocab),
            "ours hybrid topk": step_fn(student, teacher, cache, "hybrid", False, args.batch, args.vocab),
            "ours soft online": step_fn(student, teacher, cache, "soft", True, args.batch, args.vocab),
        }
        results = {name: profiled(step, args.steps) for name, step in variants.items()}
    for name, (seconds, ops) in results.items():
        print(f"\n{name}: {seconds:.3f} cpu s/step (unprofiled); profiled self cpu {sum(ops.values()):.3f} s/step")
        for op, value in sorted(ops.items(), key=lambda kv: -kv[1])[: args.rows]:
            print(f"  {op:<60} {value * 1e3:8.1f} ms")
    floor = defaultdict(float)
    for name in ("ours sft", "teacher forward"):
        for op, value in results[name][1].items():
            floor[op] += value
    online = results["ours soft online"][1]
    gap = {op: online.get(op, 0.0) - floor.get(op, 0.0) for op in set(online) | set(floor)}
    print(
        f"\nonline soft over its floor: {results['ours soft online'][0]:.3f} / "
        f"({results['ours sft'][0]:.3f} + {results['teacher forward'][0]:.3f}) cpu s = "
        f"{results['ours soft online'][0] / (results['ours sft'][0] + results['teacher forward'][0]):.3f}; "
        f"profiled self cpu {sum(online.values()):.3f} vs {sum(floor.values()):.3f} s/step; the difference by operator:"
    )
    for op, value in sorted(gap.items(), key=lambda kv: -abs(kv[1]))[: args.rows]:
        print(f"  {op:<60} {value * 1e3:+8.1f} ms")


if __name__ == "__main__":
    main()
