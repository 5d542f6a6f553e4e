"""Training-step throughput: our soft-KD (fkl) and hybrid steps against their floors, TRL's GKDTrainer and a plain loop.

Competitors, each training its own copy of the same random-init Llama student against the same frozen teacher, on
the same examples (fixed prompt + completion lengths, so every batch holds the same tokens):

- `ours sft`: the floor of an offline KD step, `trainers.loop.train` with method `sft` (cross-entropy) on the same
  tokens, read from the same Arrow data set without its soft-label columns;
- `teacher forward`: what online KD adds to that floor, one no-grad teacher forward on the same batch as the
  harness's online step runs it (decoder, then the output head on the completion rows only);

- `ours soft topk`: `trainers.loop.train` with method `soft` (forward KL) on the teacher's cached top-k soft labels
  (an Arrow data set on disk, as `harness run` reads it; the one-off cache build is not timed here, see
  bench/method_cost.py for what it costs);
- `ours soft online`: the same loss against the online teacher's full distribution (`--teacher-signal online`);
- `ours hybrid topk`: method `hybrid` (0.5 CE on teacher tokens + 0.5 forward KL, top-k soft labels);
- `trl gkd`: `trl.experimental.gkd.GKDTrainer` with lmbda=0 (no student sampling), beta=0 (forward KL), seq_kd off,
  gradient checkpointing off and bf16 off (SFTConfig turns both on by default; here everything runs in float32);
- `plain`: full logits of both models, log_softmax, `F.kl_div(log_target=True)` masked to the completion tokens,
  backward, gradient clipping, AdamW step.

All use AdamW, the same learning rate and gradient clipping at 1.0, float32, one torch thread. A step's time runs from
the start of one step to the start of the next (data loading and collation included); the first step of every block
is dropped, blocks of the competitors are interleaved, and the figure is the median step. Tokens/s counts the tokens
the student reads (prompt + completion, no padding). The ratios use process CPU time per step: the 2 cores here are
shared with other jobs, so wall time mostly measures the scheduler (it is printed too). Before timing, the losses of
`trl gkd`, `plain` and `ours soft online` on one batch are checked to agree (the same forward KL over the same
completion positions). Our steps are timed through `train`'s `on_policy` hook, called at the start of every
micro-batch (here it returns the examples unchanged), TRL's through a `TrainerCallback.on_step_begin`.

The ratios to the floors (`--json PATH` writes them): `offline_soft_over_sft` and `offline_hybrid_over_sft` (step
time over the sft step), `online_soft_over_sft_plus_teacher` (over the sft step plus the teacher forward): lower is
better, 1.0 means KD costs nothing above fine-tuning; `online_soft_speedup_vs_trl` (TRL's step time over ours at
equal work) and the other `*_speedup_vs_*` keys: higher is better. `--quick` runs tiny shapes for one block (a test
checks the JSON's shape with it; its times mean nothing).

    PYTHONPATH=. python bench/train_throughput.py [--vocab 32000] [--batch 4] [--blocks 4] [--steps 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models
from transformers import PreTrainedModel, PreTrainedTokenizerFast, TrainerCallback

from bench.common import StepClock, configure, interleaved, median, print_settings, random_llama, spread
from harness.supervise import teacher_topk
from kdcore.io import atomic_write_json
from trainers.batch import Batch, collate
from trainers.loop import TrainConfig, hidden_rows, logits_fn, row_terms, train
from trainers.objectives import load_method
from trainers.topk import topk_features

PAD = 0
QUICK = {  # tiny shapes for a test of the script's output; its times mean nothing
    "vocab": 64,
    "batch": 2,
    "prompt_len": 4,
    "completion_len": 6,
    "student": "16,1,2,32",
    "teacher": "32,1,2,64",
    "top_k": 4,
    "steps": 1,
    "blocks": 1,
}


def make_examples(n: int, prompt_len: int, completion_len: int, vocab: int, seed: int) -> list[dict[str, list[int]]]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, vocab, (n, prompt_len + completion_len), generator=generator).tolist()
    return [{"prompt_ids": row[:prompt_len], "completion_ids": row[prompt_len:]} for row in tokens]


def topk_dataset(teacher: PreTrainedModel, examples: list[dict], k: int, vocab: int, folder: Path) -> datasets.Dataset:
    """The teacher's top-k soft labels as the pipeline stores them: an Arrow data set on disk, torch-formatted."""
    soft = teacher_topk(teacher, examples, PAD, k, batch_size=32, vocab_rows=vocab)
    features = datasets.Features(
        {
            "prompt_ids": datasets.List(datasets.Value("int32")),
            "completion_ids": datasets.List(datasets.Value("int32")),
            **topk_features(k),
        }
    )
    columns = {
        "prompt_ids": [ex["prompt_ids"] for ex in examples],
        "completion_ids": [ex["completion_ids"] for ex in examples],
        "topk_ids": [ids.tolist() for ids, _ in soft],
        "topk_logprobs": [lp.tolist() for _, lp in soft],
    }
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(folder))
    return datasets.load_from_disk(str(folder)).with_format("torch")


def labelled(rows: list[dict]) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels (-100 outside the completion tokens) in Hugging Face's convention."""
    batch = collate(rows, PAD)
    labels = torch.full_like(batch.input_ids, -100)
    labels[batch.positions[:, 0], batch.positions[:, 1] + 1] = batch.targets
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": labels}


def plain_kd_loss(student: PreTrainedModel, teacher: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean forward KL over the completion tokens, from full [B, L, V] logits of both models."""
    logits = student(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1]
    with torch.no_grad():
        teacher_logits = teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1]
    kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher_logits, -1), reduction="none", log_target=True).sum(
        -1
    )
    mask = inputs["labels"][:, 1:] != -100
    return kl[mask].mean()


class PlainLoop:
    """The loop a user writes by hand: full logits, log_softmax, kl_div, backward, clip, AdamW step."""

    def __init__(self, student: PreTrainedModel, teacher: PreTrainedModel, examples: list[dict], args) -> None:
        self.student, self.teacher, self.examples, self.batch = student, teacher, examples, args.batch
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr)
        self.cursor = 0

    def run(self, steps: int, clock: StepClock) -> None:
        self.student.train()
        for _ in range(steps):
            clock.tick()
            rows = [self.examples[(self.cursor + i) % len(self.examples)] for i in range(self.batch)]
            self.cursor += self.batch
            loss = plain_kd_loss(self.student, self.teacher, labelled(rows))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad()
        clock.tick()


def teacher_forward(teacher: PreTrainedModel, batch: Batch, vocab: int) -> torch.Tensor:
    """The teacher's logits at the batch's completion rows, as the online step computes them (no grad)."""
    with torch.no_grad():
        return logits_fn(teacher)(hidden_rows(teacher, batch))[..., :vocab]


class ClockCallback(TrainerCallback):
    def __init__(self) -> None:
        self.clock: StepClock | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.clock.tick()

    def on_train_end(self, args, state, control, **kwargs):
        self.clock.tick()


def placeholder_tokenizer() -> PreTrainedTokenizerFast:
    """GKDTrainer reads only the pad id from its processing class; the examples are token ids already."""
    vocab = {"<pad>": PAD, "<eos>": 1}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<eos>")), pad_token="<pad>", eos_token="<eos>"
    )


def trl_trainer(student: PreTrainedModel, teacher: PreTrainedModel, examples: list[dict], args, out: Path):
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    config = GKDConfig(
        output_dir=str(out),
        lmbda=0.0,
        beta=0.0,
        seq_kd=False,
        temperature=1.0,
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        max_grad_norm=1.0,
        max_steps=args.steps + 1,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=args.seed,
    )
    callback = ClockCallback()
    trainer = GKDTrainer(
        model=student,
        teacher_model=teacher,
        args=config,
        train_dataset=datasets.Dataset.from_list(examples),
        data_collator=labelled,
        processing_class=placeholder_tokenizer(),
        callbacks=[callback],
    )
    return trainer, callback


def check_losses_agree(student, teacher, trainer, examples: list[dict], args) -> float:
    """Max difference between TRL's, the plain loop's and our online soft loss on one batch (all forward KL)."""
    rows = examples[: args.batch]
    inputs = labelled(rows)
    with torch.no_grad():
        trl_loss = trainer.compute_loss(student, inputs)
        plain = plain_kd_loss(student, teacher, inputs)
        ours = row_terms(load_method("soft"), student, collate(rows, PAD), 0.0, 2048, teacher)["loss"].mean()
    return max(abs(float(trl_loss) - float(plain)), abs(float(ours) - float(plain)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--completion-len", type=int, default=96)
    parser.add_argument("--student", default="128,2,4,384", help="hidden,layers,heads,intermediate")
    parser.add_argument("--teacher", default="256,4,4,768", help="hidden,layers,heads,intermediate")
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per block (one more runs as warm-up)")
    parser.add_argument("--blocks", type=int, default=4, help="interleaved blocks per competitor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the ratios (and each competitor's step times) here")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one block (checks the output, not speed)")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    configure(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import trl

    print_settings(
        vocab=args.vocab,
        batch=args.batch,
        prompt_len=args.prompt_len,
        completion_len=args.completion_len,
        student=args.student,
        teacher=args.teacher,
        top_k=args.top_k,
        lr=args.lr,
        steps_per_block=args.steps,
        blocks=args.blocks,
        dtype="float32",
        trl=trl.__version__,
    )
    student_shape = [int(x) for x in args.student.split(",")]
    teacher_shape = [int(x) for x in args.teacher.split(",")]
    student = random_llama(args.vocab, *student_shape, seed=args.seed)
    teacher = random_llama(args.vocab, *teacher_shape, seed=args.seed + 1).eval().requires_grad_(False)
    n_examples = args.batch * (args.steps + 1) * args.blocks
    examples = make_examples(n_examples, args.prompt_len, args.completion_len, args.vocab, args.seed)
    tokens_per_step = args.batch * (args.prompt_len + args.completion_len)
    print(
        f"student {sum(p.numel() for p in student.parameters()) / 1e6:.1f}M params, "
        f"teacher {sum(p.numel() for p in teacher.parameters()) / 1e6:.1f}M, {tokens_per_step} tokens per step, "
        f"{args.batch * args.completion_len} of them completion tokens",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        cache = topk_dataset(teacher, examples, args.top_k, args.vocab, Path(tmp, "topk"))
        trl_student = copy.deepcopy(student)
        trainer, callback = trl_trainer(trl_student, teacher, examples, args, Path(tmp, "trl"))
        print(
            f"losses agree: max |difference| of trl, plain and ours online = "
            f"{check_losses_agree(student, teacher, trainer, examples, args):.1e}",
            flush=True,
        )
        plain = PlainLoop(copy.deepcopy(student), teacher, examples, args)
        tokens_only = cache.remove_columns(["topk_ids", "topk_logprobs"])
        batches = [collate(examples[i : i + args.batch], PAD) for i in range(0, len(examples), args.batch)]
        config = TrainConfig(max_steps=args.steps + 1, batch_size=args.batch, lr=args.lr, warmup_ratio=0.0)

        def ours(method: str, online: bool, data: datasets.Dataset = cache) -> Any:
            model = copy.deepcopy(student)
            block = [0]

            def run() -> list[tuple[float, float]]:
                clock = StepClock()

                def tick(chunk: list[dict], index: int) -> list[dict]:
                    clock.tick()
                    return chunk

                block[0] += 1
                train(
                    model,
                    load_method(method),
                    data,
                    TrainConfig(**{**config.to_dict(), "seed": block[0]}),
                    pad_id=PAD,
                    teacher=teacher if online else None,
                    vocab_rows=args.vocab,
                    on_policy=tick,
                )
                clock.tick()
                return clock.step_seconds()

            return run

        def trl_run() -> list[tuple[float, float]]:
            callback.clock = StepClock()
            trainer.train()
            return callback.clock.step_seconds()

        def teacher_run() -> list[tuple[float, float]]:
            clock = StepClock()
            for i in range(args.steps + 1):
                clock.tick()
                teacher_forward(teacher, batches[i % len(batches)], args.vocab)
            clock.tick()
            return clock.step_seconds()

        def plain_run() -> list[tuple[float, float]]:
            clock = StepClock()
            plain.run(args.steps + 1, clock)
            return clock.step_seconds()

        samples = interleaved(
            {
                "ours sft": ours("sft", online=False, data=tokens_only),
                "teacher forward": teacher_run,
                "ours soft topk": ours("soft", online=False),
                "ours soft online": ours("soft", online=True),
                "ours hybrid topk": ours("hybrid", online=False),
                "trl gkd": trl_run,
                "plain": plain_run,
            },
            args.blocks,
        )

    report(samples, tokens_per_step)
    if args.json is not None:
        settings = {key: value for key, value in vars(args).items() if key != "json"}
        atomic_write_json(args.json, summary(samples, settings))
        print(f"wrote {args.json}")


def ratios(cpu: dict[str, float]) -> dict[str, float]:
    """Step-time ratios from median CPU seconds per step: `*_over_*` lower is better, `*_speedup_vs_*` higher."""
    online_floor = cpu["ours sft"] + cpu["teacher forward"]
    return {
        "offline_soft_over_sft": cpu["ours soft topk"] / cpu["ours sft"],
        "offline_hybrid_over_sft": cpu["ours hybrid topk"] / cpu["ours sft"],
        "online_soft_over_sft_plus_teacher": cpu["ours soft online"] / online_floor,
        "online_soft_speedup_vs_trl": cpu["trl gkd"] / cpu["ours soft online"],
        "online_soft_speedup_vs_plain": cpu["plain"] / cpu["ours soft online"],
        "offline_soft_speedup_vs_trl": cpu["trl gkd"] / cpu["ours soft topk"],
        "offline_hybrid_speedup_vs_trl": cpu["trl gkd"] / cpu["ours hybrid topk"],
        "trl_over_plain": cpu["trl gkd"] / cpu["plain"],
        "trl_over_sft_plus_teacher": cpu["trl gkd"] / online_floor,
    }


def summary(samples: dict[str, list[tuple[float, float]]], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON the script writes: ratios (by CPU time), each competitor's median and spread, the settings."""

    def stats(values: list[float]) -> dict[str, float]:
        return {"median": median(values), "min": min(values), "max": max(values)}

    steps = {
        name: {"cpu_s": stats([c for _, c in values]), "wall_s": stats([w for w, _ in values]), "steps": len(values)}
        for name, values in samples.items()
    }
    cpu = {name: entry["cpu_s"]["median"] for name, entry in steps.items()}
    return {"ratios": ratios(cpu), "steps": steps, "settings": {k: str(v) for k, v in settings.items()}}


def report(samples: dict[str, list[tuple[float, float]]], tokens_per_step: int) -> None:
    """Per-competitor step times and tokens/s, by CPU time (the ratios) and by wall time, then the floor ratios."""
    cpu = {name: tokens_per_step / median([c for _, c in steps]) for name, steps in samples.items()}
    wall = {name: tokens_per_step / median([w for w, _ in steps]) for name, steps in samples.items()}
    print(
        f"\n{'competitor':<18} {'steps':>5} {'cpu s/step: median [min, max]':>30} {'tok/s cpu':>9} {'x trl':>6} "
        f"{'x plain':>7} {'wall s/step: median [min, max]':>31} {'tok/s wall':>10} {'x trl':>6} {'x plain':>7}"
    )
    for name, steps in samples.items():
        print(
            f"{name:<18} {len(steps):>5} {spread([c for _, c in steps]):>30} {cpu[name]:>9.0f} "
            f"{cpu[name] / cpu['trl gkd']:>6.2f} {cpu[name] / cpu['plain']:>7.2f} "
            f"{spread([w for w, _ in steps]):>31} {wall[name]:>10.0f} {wall[name] / wall['trl gkd']:>6.2f} "
            f"{wall[name] / wall['plain']:>7.2f}"
        )
    print(f"\ntrl/plain = {cpu['trl gkd'] / cpu['plain']:.2f} (cpu), {wall['trl gkd'] / wall['plain']:.2f} (wall)")
    for name in ("ours soft topk", "ours soft online", "ours hybrid topk"):
        print(
            f"{name}: ours/trl = {cpu[name] / cpu['trl gkd']:.2f} (cpu) {wall[name] / wall['trl gkd']:.2f} (wall), "
            f"ours/plain = {cpu[name] / cpu['plain']:.2f} (cpu) {wall[name] / wall['plain']:.2f} (wall)"
        )
    by_cpu = ratios({name: median([c for _, c in steps]) for name, steps in samples.items()})
    by_wall = ratios({name: median([w for w, _ in steps]) for name, steps in samples.items()})
    print("\nratios (cpu; wall in brackets):")
    for key, value in by_cpu.items():
        print(f"  {key:<36} {value:6.3f} [{by_wall[key]:.3f}]")


if __name__ == "__main__":
    main()
