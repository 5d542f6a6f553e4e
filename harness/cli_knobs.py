"""The training options `run` and `sweep` share besides the basic ones (harness.cli.RUN_OPTIONS), with TRL's names:
each sets the TrainConfig field of its name (trainers.loop, where each is documented and validated)."""

from __future__ import annotations

from typing import Annotated

import typer


def _option(name: str, kind: type, help_text: str) -> tuple[str, object, None]:
    flag = "--" + name.replace("_", "-")
    return (name, Annotated[kind | None, typer.Option(flag, help=help_text + " (default: the pair's).")], None)


TRAINING_KNOBS = [  # (name, annotation, default), as harness.cli.RUN_OPTIONS has them
    _option("gradient_accumulation_steps", int, "Micro-batches per optimiser step"),
    _option("warmup_ratio", float, "Share of the steps spent warming the learning rate up"),
    _option(
        "lr_scheduler_type", str, "Learning-rate decay after warm-up: cosine, linear, constant, constant_with_warmup"
    ),
    _option("weight_decay", float, "AdamW weight decay"),
    _option("max_grad_norm", float, "Gradient clipping norm; 0 = off"),
    _option("max_length", int, "Prompt + completion tokens in training; longer completions are cut"),
    (
        "bf16",
        Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="bf16 mixed precision (default: the pair's).")],
        None,
    ),
    _option("lora_alpha", float, "LoRA scaling alpha, with --lora-r"),
    (
        "eval_every",
        Annotated[
            int | None,
            typer.Option(
                "--eval-every",
                help="Score the student every N steps on a dev slice of the training task (logged, kept in the "
                "record); 0 = never.",
            ),
        ],
        None,
    ),
]
REPORT_TO_OPTION = (
    "report_to",
    Annotated[
        str,
        typer.Option(
            "--report-to",
            help="Experiment tracker for training's scalars: none, tensorboard, wandb (offline) or trackio.",
        ),
    ],
    "none",
)
