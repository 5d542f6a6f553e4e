"""What a sweep's cells will cost before they run: FLOPs and device-hours per phase, from the accounting's FLOPs
model and a throughput table per device kind (`harness/throughput.toml`, each figure with its source).

The FLOPs model is the one the run's ledger records with (kdcore.costs.PhaseCost.add_work): 2 x parameters x tokens
for generation and scoring, 6 x parameters x tokens for training, plus 2 x teacher parameters x tokens when training
reads the online teacher. Tokens are estimated without running anything:
- prompt tokens: the characters of each prompt's messages, divided by the pair's characters per token (measured
  on those prompts with the student's tokenizer when it is on disk, else CHARS_PER_TOKEN);
- completion tokens: the full budget (the supervision's `max_new_tokens`, each benchmark's evaluation budget),
  or the reference answer's length for training on reference answers. Completions that stop early make the
  estimate an upper bound, which is what a scheduler's time limit needs;
- training: steps x gradient_accumulation_steps x batch_size sequences of prompt + completion, cut at the pair's
  `max_length`.
Phases a pair's cells share (teacher supervision, the data sources of its plan, the teacher's and the initial student's
evaluations) are built once and cached: they are estimated once per pair, marked `shared`.
On-policy sampling inside training is not counted, as the ledger does not count it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from harness.pairs import Pair
from kdcore.errors import HarnessError

logger = logging.getLogger(__name__)
THROUGHPUT_FILE = Path(__file__).with_name("throughput.toml")
CHARS_PER_TOKEN = 4.0  # chosen: the usual figure for English text with BPE vocabularies (OpenAI's tokenizer guide)
TRAINING_BYTES_PER_PARAM = 16  # fp32 master weights, gradients and two Adam moments (ZeRO, arXiv 1910.02054, 3.1)
SHARED_PHASES = ("supervise", "evaluate_teacher", "evaluate_student_before")  # and every data source (cached)


@dataclass(frozen=True)
class Throughput:
    """One device kind's sustained FLOP/s for training and for generation, with their sources."""

    kind: str
    train: float
    generate: float
    sources: dict[str, str]
    memory_gb: float | None = None


def load_throughput(path: Path | None = None) -> dict[str, Throughput]:
    """The throughput table (default: the shipped one), validated; one-line errors."""
    source = path or THROUGHPUT_FILE
    try:
        data = tomllib.loads(source.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise HarnessError(f"cannot read throughput table {source}: {err}") from None
    table: dict[str, Throughput] = {}
    for kind, entry in data.get("devices", {}).items():
        where = f"{source.name}: device {kind!r}"
        if "train" in entry:
            figures = {"train": entry["train"], "generate": entry["generate"]}
            sources = {"train": entry.get("train_source"), "generate": entry.get("generate_source")}
        else:
            peak = entry.get("peak_bf16")
            figures = {name: (peak or 0) * entry.get(f"{name}_mfu", 0) for name in ("train", "generate")}
            sources = {
                name: f"{entry.get('peak_source')}; x {entry.get(f'{name}_mfu')}: {entry.get(f'{name}_mfu_source')}"
                for name in ("train", "generate")
            }
        for name, value in figures.items():
            if not isinstance(value, int | float) or not value > 0 or not sources[name]:
                raise HarnessError(f"{where}: needs a positive {name} figure with its source")
        train, generate = float(figures["train"]), float(figures["generate"])
        table[kind] = Throughput(kind, train, generate, sources, entry.get("memory_gb"))
    return table


def throughput_for(device: str, path: Path | None = None) -> Throughput:
    """The table's entry for `device` (the longest table name that starts it); a one-line error if none does."""
    table = load_throughput(path)
    matches = [kind for kind in table if device.lower().startswith(kind.lower())]
    if not matches:
        raise HarnessError(f"no throughput figures for device {device!r}; the table has: {', '.join(table)}")
    return table[max(matches, key=len)]


@dataclass
class PhaseEstimate:
    """One phase's estimated work: tokens, FLOPs and (on a known device) device-hours."""

    name: str
    tokens: float
    flops: float
    device_hours: float | None = None
    shared: bool = False  # built once per pair and cached (every cell reuses it)


@dataclass
class CellEstimate:
    """A cell's estimated phases on one device kind; `to_dict` is what a record stores as `estimate`."""

    device: str
    phases: list[PhaseEstimate] = field(default_factory=list)
    training_state_gb: float = 0.0  # device memory training needs without sharding (weights, gradients, Adam)

    def own(self) -> list[PhaseEstimate]:
        return [p for p in self.phases if not p.shared]

    @property
    def flops(self) -> float:
        return sum(p.flops for p in self.own())

    @property
    def device_hours(self) -> float | None:
        hours = [p.device_hours for p in self.own()]
        return None if None in hours else sum(h for h in hours if h is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "phases": {p.name: asdict(p) for p in self.phases},
            "flops": self.flops,
            "device_hours": self.device_hours,
            "model": "harness.cost_plan: 2 x params x tokens to generate, 6 x params x tokens to train",
        }


@cache
def parameters(ref: str) -> int:
    """Parameters of the model `ref`, counted on the meta device: from its folder when it is on disk (builtin or
    local), else from the config facts shipped for dry runs (no download), else from its hub config."""
    from harness.dryrun import CONFIGS, model_facts
    from harness.models import BUILTIN, resolve
    from harness.phases import parameter_count

    if ref.startswith(BUILTIN) or Path(ref).is_dir() or not (CONFIGS / f"{ref}.json").is_file():
        return parameter_count(resolve(ref))
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(model_facts(ref)["config"])
    kind = config.pop("model_type")
    config.pop("architectures", None)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **config))
    return sum(p.numel() for p in model.parameters())


@cache
def chars_per_token(ref: str, task_name: str) -> float:
    """Characters per token of tokenizer `ref` on the first prompts of `task_name` when it is on disk, else
    CHARS_PER_TOKEN."""
    from harness.models import BUILTIN, load_tokenizer, resolve
    from tasks import load_task

    if not (ref.startswith(BUILTIN) or Path(ref).is_dir()):
        return CHARS_PER_TOKEN
    tokenizer = load_tokenizer(resolve(ref))
    task = load_task(task_name)
    texts = [_text(task.prompt(doc)) for doc in task.docs("train")[:256]]
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return sum(len(t) for t in texts) / max(tokens, 1)


def _text(messages: Any) -> str:
    return "".join(m["content"] for m in messages) if isinstance(messages, list) else str(messages)


@cache
def _mean_chars(task_name: str, split: str, count: int | None, answers: bool = False) -> tuple[int, float]:
    """Docs used and the mean characters of their prompts (or reference answers)."""
    from tasks import load_task

    task = load_task(task_name)
    docs = task.docs(split)[:count]
    texts = [task.reference(d) if answers else _text(task.prompt(d)) for d in docs]
    return len(docs), (sum(len(t) for t in texts) / len(texts) if texts else 0.0)


def _eval_tokens(pair: Pair, limit: int | None, cpt: float) -> float:
    """Prompt + completion tokens of one model's evaluation on the pair's benchmarks."""
    from tasks import load_task

    total = 0.0
    for name in pair.tasks:
        docs, chars = _mean_chars(name, "test", limit)
        budget = pair.evaluation.budget(name, load_task(name).max_new_tokens)
        total += docs * pair.evaluation.samples * (chars / cpt + budget)
    return total


def estimate_cell(spec: Any, device: str, throughput_file: Path | None = None) -> CellEstimate:
    """The estimated phases of one cell (a harness.pipeline.RunSpec) on `device`; device-hours stay None when the
    table has no figures for it."""
    from harness.phases import plan_phases
    from harness.pipeline import check_spec

    pair, objective, config = check_spec(spec)
    plan = objective.data_plan(spec.teacher_signal)
    try:
        rates: Throughput | None = throughput_for(device, throughput_file)
    except HarnessError:
        rates = None
    teacher, student = parameters(pair.teacher), parameters(pair.student)
    cpt = chars_per_token(pair.student, pair.train_task)
    prompts, prompt_chars = _mean_chars(pair.train_task, "train", pair.train_prompts)
    prompt_tokens = prompt_chars / cpt
    if plan.completions == "teacher":
        completion = float(pair.max_new_tokens)
    else:
        completion = _mean_chars(pair.train_task, "train", pair.train_prompts, answers=True)[1] / cpt
    sequence = min(prompt_tokens + completion, float(config.max_length or math.inf))
    train_tokens = config.max_steps * config.gradient_accumulation_steps * config.batch_size * sequence
    online = teacher if plan.needs_teacher_model else 0
    work = {  # phase -> (tokens, FLOPs per token, kind of work)
        "supervise": (prompts * (prompt_tokens + pair.max_new_tokens), 2 * teacher, "generate"),
        "train": (train_tokens, 6 * student + 2 * online, "train"),
        "evaluate": (_eval_tokens(pair, spec.limit, cpt), 2 * student, "generate"),
        "evaluate_teacher": (_eval_tokens(pair, spec.limit, cpt), 2 * teacher, "generate"),
        "evaluate_student_before": (_eval_tokens(pair, spec.limit, cpt), 2 * student, "generate"),
    }
    for source in plan.sources:  # each generates one completion per training prompt with its model
        per_token = 2 * (teacher if source.model == "teacher" else student)
        work[source.name] = (prompts * (prompt_tokens + pair.max_new_tokens), per_token, "generate")
    shared = {*SHARED_PHASES, *(source.name for source in plan.sources)}
    estimate = CellEstimate(device=device)
    trained = student if not config.lora_r else 0
    weights = student + online
    estimate.training_state_gb = (TRAINING_BYTES_PER_PARAM * trained + 2 * weights) / 1e9
    for phase in plan_phases(plan):
        if phase.name is None:
            continue
        tokens, per_token, kind = work[phase.name]
        flops = tokens * per_token
        hours = None if rates is None else flops / getattr(rates, kind) / 3600
        estimate.phases.append(PhaseEstimate(phase.name, tokens, flops, hours, phase.name in shared))
    return estimate


def recorded_estimate(spec: Any) -> dict[str, Any]:
    """The estimate a run's record stores, for the device it runs on (harness.pipeline.record); empty when a model's
    config cannot be read."""
    from kdcore.costs import device_kind

    try:
        return estimate_cell(spec, device_kind()).to_dict()
    except (HarnessError, OSError) as err:
        logger.warning("no cost estimate for the record: %s", err)
        return {}
