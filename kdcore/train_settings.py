"""What each training setting may be: one rule table, read by the command line, the pairs file and the records."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdcore.errors import HarnessError


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Rule:
    allowed: str  # what a value must be, as an error says it
    check: Callable[[Any], bool]


POSITIVE_INTEGER = Rule("a positive integer", lambda v: is_integer(v) and v > 0)
COUNT_OR_OFF = Rule("0 (off) or a positive integer", lambda v: is_integer(v) and v >= 0)
POSITIVE = Rule("a positive number", lambda v: is_number(v) and v > 0)
NON_NEGATIVE = Rule("a number >= 0", lambda v: is_number(v) and v >= 0)
FRACTION = Rule("a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1)

LR_SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")  # transformers' get_scheduler names


@dataclass(frozen=True)
class TrainSetting:
    """One training setting (a field of trainers.loop.TrainConfig, TRL's name where TRL has one): its rule, its
    type, what it means, and whether the run commands take it as an option (`--name-with-dashes`)."""

    rule: Rule
    kind: type
    meaning: str
    option: bool = True


TRAIN_SETTINGS: dict[str, TrainSetting] = {  # in trainers.loop.TrainConfig's order
    "max_steps": TrainSetting(POSITIVE_INTEGER, int, "Optimiser steps"),
    "batch_size": TrainSetting(POSITIVE_INTEGER, int, "Global batch size (sequences per optimiser step)"),
    "gradient_accumulation_steps": TrainSetting(POSITIVE_INTEGER, int, "Micro-batches per optimiser step"),
    "lr": TrainSetting(POSITIVE, float, "Peak learning rate"),
    "weight_decay": TrainSetting(NON_NEGATIVE, float, "AdamW weight decay"),
    "warmup_ratio": TrainSetting(FRACTION, float, "Share of the steps spent warming the learning rate up from 0"),
    "lr_scheduler_type": TrainSetting(
        Rule(f"one of {', '.join(LR_SCHEDULERS)}", lambda v: v in LR_SCHEDULERS),
        str,
        f"Learning-rate decay after warm-up: {', '.join(LR_SCHEDULERS)}",
    ),
    "max_grad_norm": TrainSetting(
        Rule("0 (off) or a positive number", NON_NEGATIVE.check), float, "Gradient clipping norm; 0 = off"
    ),
    "chunk_size": TrainSetting(POSITIVE_INTEGER, int, "Completion rows per loss chunk", option=False),
    "bf16": TrainSetting(
        Rule("true or false", lambda v: isinstance(v, bool)), bool, "bf16 mixed precision, on GPUs that have it"
    ),
    "checkpoint_every": TrainSetting(
        COUNT_OR_OFF, int, "Checkpoint every N steps (0: only at the end and at SIGTERM); rerun to resume"
    ),
    "diagnostics_every": TrainSetting(
        COUNT_OR_OFF, int, "Steps between full-vocabulary entropy diagnostics (and the last step); 0 = never", False
    ),
    "eval_every": TrainSetting(
        COUNT_OR_OFF,
        int,
        "Score the student every N steps on a dev slice of the training task (logged, kept in the record); 0 = never",
    ),
    "logging_steps": TrainSetting(COUNT_OR_OFF, int, "Steps between log lines; 0 = one every 5% of the steps", False),
    "max_length": TrainSetting(
        Rule("a positive integer", lambda v: v is None or POSITIVE_INTEGER.check(v)),
        int,
        "Prompt + completion tokens in training; longer completions are cut",
    ),
    "lora_r": TrainSetting(
        COUNT_OR_OFF, int, "Train LoRA adapters of this rank on every linear layer (peft), merged at the end; 0 = off"
    ),
    "lora_alpha": TrainSetting(POSITIVE, float, "LoRA scaling alpha (with lora_r)"),
    "seed": TrainSetting(Rule("an integer", is_integer), int, "The training seed (the run's seed)", option=False),
}
TRAIN_RULES: dict[str, Rule] = {name: setting.rule for name, setting in TRAIN_SETTINGS.items()}


def train_problem(label: str, name: str, value: Any) -> str | None:
    """None when `value` is allowed for the training setting `name`, else the one-line problem, `label` naming
    the setting as the user wrote it (`--max-steps`, `train.max_steps`)."""
    rule = TRAIN_RULES.get(name)
    if rule is None:
        return f"unknown training setting {name!r}; valid settings: {', '.join(TRAIN_RULES)}"
    return None if rule.check(value) else f"{label} {value!r}: must be {rule.allowed}"


def check_train_settings(values: dict[str, Any], label: Callable[[str], str], where: str = "") -> None:
    """Raise a one-line HarnessError for the first training setting in `values` that breaks its rule."""
    for name, value in values.items():
        if problem := train_problem(label(name), name, value):
            raise HarnessError(f"{where}{problem}")
