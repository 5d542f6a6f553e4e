"""Soft-label cache: bytes per token of the stored top-k against full-vocabulary float32, and what top-k loses.

1. Size. For each vocabulary size and k, the teacher's top-k of random logits (`trainers.topk.topk_logprobs`) is
   written as a `datasets` Arrow table with the cache's own columns (`trainers.topk.topk_features`: int32 ids,
   float16 log-probs plus the tail bucket) and saved to disk; the figure is the size of the Arrow files divided by the
   tokens stored, against 4 * vocab bytes for the full float32 distribution. (The values do not change the size: the
   columns are fixed-size and uncompressed.)
2. Loss of information. The mean KL(P || P_hat) between the teacher's full distribution P and the distribution
   P_hat that its stored top-k row rebuilds (`trainers.topk.mean_topk_gap`), against k, with the mean tail mass
   (1 - top-k mass) and the teacher's mean entropy for context: on the tiny pair's teacher at every completion token of
   its arith supervision (the cache `harness run --pair tiny` trains on; built once in the default $HARNESS_CACHE),
   and on a random-init Llama with vocab 32k on random tokens for the large-vocabulary shape.

    PYTHONPATH=. python bench/topk_cache.py [--tokens 4096] [--examples 512] [--skip-tiny]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from bench.common import configure, print_settings, random_llama
from harness.models import load_model, resolve
from harness.pairs import get_pair
from harness.supervise import SupervisionSettings, load_or_build_supervision
from tasks.backends import make_generator
from tasks.generation import Engine
from trainers.batch import collate
from trainers.loop import hidden_rows, logits_fn
from trainers.topk import mean_topk_gap, topk_features, topk_logprobs

CACHE_KS = (8, 16, 32, 64)
GAP_KS = (1, 2, 4, 8, 16, 32, 64)
TOKENS_PER_COMPLETION = 32


def cache_bytes_per_token(vocab: int, tokens: int, folder: Path) -> dict[int, float]:
    """Bytes per token on disk of the top-k cache of `tokens` random-logit positions, for each k in CACHE_KS."""
    generator = torch.Generator().manual_seed(0)
    columns: dict[int, dict[str, list]] = {k: {"topk_ids": [], "topk_logprobs": []} for k in CACHE_KS}
    for _ in range(tokens // TOKENS_PER_COMPLETION):
        logits = torch.randn(TOKENS_PER_COMPLETION, vocab, generator=generator) * 3
        for k in CACHE_KS:
            top = topk_logprobs(logits, k)
            columns[k]["topk_ids"].append(top.ids.tolist())
            columns[k]["topk_logprobs"].append(top.logprobs.tolist())
    sizes = {}
    for k in CACHE_KS:
        out = folder / f"v{vocab}_k{k}"
        datasets.Dataset.from_dict(columns[k], features=topk_features(k)).save_to_disk(str(out))
        stored = sum(path.stat().st_size for path in out.glob("*.arrow"))
        sizes[k] = stored / (tokens // TOKENS_PER_COMPLETION * TOKENS_PER_COMPLETION)
    return sizes


def gap_rows(logits: torch.Tensor) -> list[tuple[int, float, float]]:
    """(k, mean KL(P || P_hat), mean tail mass) for each k in GAP_KS that fits the vocabulary."""
    rows = []
    for k in GAP_KS:
        if k < logits.shape[-1]:
            tail = topk_logprobs(logits, k, dtype=torch.float32).logprobs[..., -1].exp().mean().item()
            rows.append((k, mean_topk_gap(logits, k), tail))
    return rows


def print_gaps(label: str, logits: torch.Tensor) -> None:
    logprobs = torch.log_softmax(logits.float(), -1)
    entropy = -(logprobs.exp() * logprobs).sum(-1).mean().item()
    print(
        f"\n{label}: {logits.shape[0]} positions, vocab {logits.shape[-1]}, mean entropy {entropy:.3f} nats "
        f"(uniform: {torch.log(torch.tensor(float(logits.shape[-1]))).item():.2f})"
    )
    print(f"{'k':>4} {'mean KL(P||P_hat) nats':>23} {'mean tail mass':>15}")
    for k, gap, tail in gap_rows(logits):
        print(f"{k:>4} {gap:>23.2e} {tail:>15.2e}")


def tiny_teacher_supervision(top_k: int = 32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, datasets.Dataset]:
    """The tiny pair's teacher, its tokenizer and its arith supervision: the cache entry `harness run --pair tiny`
    uses (built on first use, once, in the default $HARNESS_CACHE, like the tiny pair itself)."""
    pair = get_pair("tiny")
    teacher_ref = resolve(pair.teacher)
    teacher, tokenizer = load_model(teacher_ref, pair.dtype, pair.model_kwargs)
    rows = teacher.get_output_embeddings().weight.shape[0]
    data, _ = load_or_build_supervision(
        pair,
        teacher_ref,
        tokenizer,
        lambda: make_generator(teacher_ref, lambda: (teacher, tokenizer), engine=Engine(pair.dtype, vocab_rows=rows)),
        SupervisionSettings(top_k=top_k),
        sum(p.numel() for p in teacher.parameters()),
    )
    return teacher, tokenizer, data


def tiny_teacher_logits(examples: int) -> torch.Tensor:
    """The tiny teacher's logits at every completion token of the first `examples` supervision examples."""
    teacher, tokenizer, data = tiny_teacher_supervision()
    head = logits_fn(teacher)
    chunks = []
    with torch.no_grad():
        for start in range(0, min(examples, len(data)), 64):
            rows = [data[i] for i in range(start, min(start + 64, examples, len(data)))]
            chunks.append(head(hidden_rows(teacher, collate(rows, tokenizer.pad_token_id))))
    return torch.cat(chunks)


def random_model_logits(vocab: int, positions: int) -> torch.Tensor:
    """A random-init Llama's logits at `positions` random-token positions (sequences of 128)."""
    model = random_llama(vocab, 128, 2, 4, 384).eval()
    ids = torch.randint(2, vocab, (positions // 128, 128), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(input_ids=ids).logits.reshape(-1, vocab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[152064, 32000])
    parser.add_argument("--tokens", type=int, default=4096, help="positions stored per cache (size figures)")
    parser.add_argument("--examples", type=int, default=512, help="tiny-teacher supervision examples (gap figures)")
    parser.add_argument("--random-positions", type=int, default=512, help="positions of the random 32k model")
    parser.add_argument("--skip-tiny", action="store_true", help="skip the tiny teacher (it builds once if missing)")
    args = parser.parse_args()
    configure()
    print_settings(
        vocab=args.vocab,
        cache_k=list(CACHE_KS),
        tokens=args.tokens,
        tokens_per_completion=TOKENS_PER_COMPLETION,
        gap_k=list(GAP_KS),
        examples=args.examples,
        random_positions=args.random_positions,
        datasets=datasets.__version__,
    )
    print(
        f"\n{'vocab':>7} {'k':>3} {'bytes/token':>11} {'6k+2':>5} {'full fp32':>10} {'cache/full':>11} "
        f"{'goal < 1/500':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for vocab in args.vocab:
            for k, size in cache_bytes_per_token(vocab, args.tokens, Path(tmp)).items():
                full = 4 * vocab
                goal = ("met" if size / full < 1 / 500 else "missed") if vocab >= 150_000 else "-"
                print(
                    f"{vocab:>7} {k:>3} {size:>11.1f} {6 * k + 2:>5} {full:>10} {'1/' + f'{full / size:.0f}':>11} "
                    f"{goal:>12}",
                    flush=True,
                )
    if not args.skip_tiny:
        print_gaps("tiny teacher on its arith supervision", tiny_teacher_logits(args.examples))
    print_gaps("random-init Llama, vocab 32000, random tokens", random_model_logits(32000, args.random_positions))


if __name__ == "__main__":
    main()
