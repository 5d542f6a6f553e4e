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
TRAIN_RULES: dict[str, Rule] = {  # one per trainers.loop.TrainConfig field
    "max_steps": POSITIVE_INTEGER,
    "batch_size": POSITIVE_INTEGER,
    "gradient_accumulation_steps": POSITIVE_INTEGER,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "warmup_ratio": FRACTION,
    "lr_scheduler_type": Rule(f"one of {', '.join(LR_SCHEDULERS)}", lambda v: v in LR_SCHEDULERS),
    "max_grad_norm": Rule("0 (off) or a positive number", NON_NEGATIVE.check),
    "chunk_size": POSITIVE_INTEGER,
    "bf16": Rule("true or false", lambda v: isinstance(v, bool)),
    "checkpoint_every": COUNT_OR_OFF,
    "diagnostics_every": COUNT_OR_OFF,
    "eval_every": COUNT_OR_OFF,
    "logging_steps": COUNT_OR_OFF,
    "max_length": Rule("a positive integer", lambda v: v is None or POSITIVE_INTEGER.check(v)),
    "lora_r": COUNT_OR_OFF,
    "lora_alpha": POSITIVE,
    "seed": Rule("an integer", is_integer),
}


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
