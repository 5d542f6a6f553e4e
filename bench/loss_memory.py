"""Peak memory of the chunked KD loss against the naive full-vocabulary loss.

Both compute the mean forward KL between a teacher and a student over N positions, from hidden states through an
lm_head (teacher head under no_grad), forward and backward. The naive version materialises [N, vocab] logits for
both models, then log-softmax, KL and their gradients; the chunked one is `trainers.chunked.chunked_token_loss`,
which also computes the teacher's logits chunk by chunk. Each measurement runs in a fresh spawned process and reports
its peak resident memory (ru_maxrss) above the resident memory it had after a small warm-up pass (so the baseline
holds the inputs, both heads and the student head's gradient), in units of one [N, vocab] float32 tensor. The
parent then checks that losses and gradients agree. `--kl-div` also measures the minimal naive loss a user would write
(or TRL's GKD computes): `log_softmax` of both logits and `F.kl_div(log_target=True)`, which holds fewer temporaries
than our divergence code.

Allocator: the children run with glibc's MALLOC_MMAP_THRESHOLD_ fixed (64 KiB by default here), so every large
tensor is its own mmap and goes back to the OS when freed, and resident memory tracks the live tensors. With glibc's
default dynamic threshold, freed [chunk, vocab] buffers stay in a fragmented heap and the chunked loss's resident
peak grows with the number of chunks (about 4x one [N, vocab] tensor at vocab 32k instead of 1.1x); pass
`--malloc-mmap-threshold 0` to see it. GPU runs use PyTorch's caching allocator, which reuses same-size blocks.

    PYTHONPATH=. python bench/loss_memory.py [--positions 2048] [--hidden 256] [--chunk-size 256] [--vocab 32000 152064]
        [--kl-div]

(from the repository root; `PYTHONPATH=.` is not needed once the package is installed with `pip install -e .`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from trainers.chunked import chunked_token_loss
from trainers.divergences import token_divergence

MIB = 2**20


def resident_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(mode: str, positions: int, hidden_size: int, vocab: int, chunk_size: int, out: str) -> None:
    """Child process: run one loss forward + backward, save its peak memory, loss and gradients to `out`."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    student_head = torch.nn.Linear(hidden_size, vocab, bias=False)
    teacher_head = torch.nn.Linear(hidden_size, vocab, bias=False).requires_grad_(False)
    student_hidden = torch.randn(positions, hidden_size, requires_grad=True)
    teacher_hidden = torch.randn(positions, hidden_size) * 2

    def run(subset: slice) -> torch.Tensor:
        hidden, teacher = student_hidden[subset], teacher_hidden[subset]
        if mode == "naive":
            with torch.no_grad():
                teacher_logits = teacher_head(teacher)
            loss = token_divergence("fkl", student_head(hidden), teacher_logits).mean()
        elif mode == "kl_div":
            with torch.no_grad():
                teacher_logprobs = torch.log_softmax(teacher_head(teacher), -1)
            student_logprobs = torch.log_softmax(student_head(hidden), -1)
            loss = F.kl_div(student_logprobs, teacher_logprobs, reduction="none", log_target=True).sum(-1).mean()
        else:

            def loss_fn(logits: torch.Tensor, rows: slice) -> torch.Tensor:
                with torch.no_grad():
                    teacher_logits = teacher_head(teacher[rows])
                return token_divergence("fkl", logits, teacher_logits)

            loss = chunked_token_loss(hidden, student_head, loss_fn, chunk_size).mean()
        loss.backward()
        return loss.detach()

    run(slice(0, 8))  # warm-up: load kernels and allocate the head's gradient before the baseline
    student_hidden.grad = None
    student_head.weight.grad.zero_()
    baseline = resident_bytes()
    baseline_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    loss = run(slice(None))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.save(
        {
            "peak_above_baseline": peak - baseline,
            "baseline": baseline,
            "baseline_peak": baseline_peak,
            "seconds": seconds,
            "loss": loss,
            "grad_hidden": student_hidden.grad,
            "grad_head": student_head.weight.grad,
        },
        out,
    )


def run_child(mode: str, args: argparse.Namespace, vocab: int, out: Path) -> dict:
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=measure, args=(mode, args.positions, args.hidden, vocab, args.chunk_size, str(out)))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"{mode} run at vocab {vocab} failed with exit code {child.exitcode}")
    return torch.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--positions", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 152064])
    parser.add_argument(
        "--kl-div", action="store_true", help="also measure the minimal naive loss (log_softmax + F.kl_div, as TRL)"
    )
    parser.add_argument("--malloc-mmap-threshold", type=int, default=65536, help="bytes; 0 keeps glibc's default")
    args = parser.parse_args()
    if args.malloc_mmap_threshold:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)  # read by each spawned child
    print(
        f"settings: positions={args.positions} hidden={args.hidden} chunk_size={args.chunk_size} "
        f"vocab={args.vocab} loss=mean fkl, float32, forward+backward, 1 thread, torch {torch.__version__}, "
        f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'glibc default')}"
    )
    print(
        f"{'vocab':>7} {'[N,V] fp32':>11} {'naive MiB':>10} {'x[N,V]':>7} {'chunked MiB':>12} {'x[N,V]':>7} "
        f"{'chunked/naive':>13} {'naive s':>8} {'chunked s':>9} {'max|d loss|':>11} {'max|d grad|':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for vocab in args.vocab:
            naive = run_child("naive", args, vocab, Path(tmp, "naive.pt"))
            chunked = run_child("chunked", args, vocab, Path(tmp, "chunked.pt"))
            unit = args.positions * vocab * 4
            loss_diff = (naive["loss"] - chunked["loss"]).abs().item()
            grad_diff = max((naive[key] - chunked[key]).abs().max().item() for key in ("grad_hidden", "grad_head"))
            print(
                f"{vocab:>7} {unit / MIB:>11.0f} {naive['peak_above_baseline'] / MIB:>10.0f} "
                f"{naive['peak_above_baseline'] / unit:>7.2f} {chunked['peak_above_baseline'] / MIB:>12.0f} "
                f"{chunked['peak_above_baseline'] / unit:>7.2f} "
                f"{chunked['peak_above_baseline'] / naive['peak_above_baseline']:>13.2f} "
                f"{naive['seconds']:>8.1f} {chunked['seconds']:>9.1f} {loss_diff:>11.1e} {grad_diff:>11.1e}"
            )
            if max(loss_diff, grad_diff) > 1e-5:
                raise SystemExit(f"chunked and naive disagree by {max(loss_diff, grad_diff):.1e} at vocab {vocab}")
            if args.kl_div:
                kl_div = run_child("kl_div", args, vocab, Path(tmp, "kl_div.pt"))
                print(
                    f"{'':>7} minimal naive (log_softmax + F.kl_div): {kl_div['peak_above_baseline'] / MIB:.0f} MiB, "
                    f"{kl_div['peak_above_baseline'] / unit:.2f} x[N,V]; chunked/minimal = "
                    f"{chunked['peak_above_baseline'] / kl_div['peak_above_baseline']:.2f}; "
                    f"max|d loss| {(kl_div['loss'] - chunked['loss']).abs().item():.1e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
