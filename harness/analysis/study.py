"""The Bridge-Garden study on the finite-state teacher (what `harness analyze --pair synthetic` runs).

For each method and seed, a TinyGRU is distilled from teacher texts (`tiny_student`), then measured:
- exposure bias: expected total KL to the teacher on the student's own texts (Monte Carlo, with its standard error)
  minus on the teacher's texts (exact), see `exposure.mc_exposure`;
- bridge accuracy: over the teacher's texts (all enumerated, weighted by probability: exact), how often the
  student's argmax is the determined token at bridge targets;
- garden entropy ratio: over the same texts, the student's expected entropy at garden positions divided by the
  teacher's (1 = the teacher's diversity; below 1 = collapse onto fewer phrasings);
- teacher-forced and own-text KL (the two terms of the exposure bias).
Per method: the mean over seeds with a 95% t interval; paired differences between methods (the same seed gives
every method the same texts and the same initial weights). Then exact prefix-level kappa (`kappa.prefix_kappa`)
along one example text for each method's first-seed student, drawn as a PNG and an HTML view.

Cost with the defaults (5 methods x 3 seeds, one CPU thread): about 9 s of CPU per (method, seed) to train and
measure, and about 17 s per method for the full-horizon heat map (its first positions enumerate every teacher
continuation for every alternative token): about 4 minutes of CPU in all. `seeds`, `methods`, `config.steps` and
`heatmap_horizon` trade it down.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from harness.analysis.exposure import mc_exposure
from harness.analysis.kappa import PrefixKappa, prefix_kappa
from harness.analysis.process import ROLES, FiniteStateTeacher
from harness.analysis.render import Panel, write_heatmap_png, write_token_html
from harness.analysis.students import StudentFn
from harness.analysis.tiny_student import STUDY_METHODS, GRUStudentConfig, model_student, train_student
from kdcore.errors import unknown_choice
from kdcore.io import atomic_write_json, atomic_write_text
from trainers.risk_estimate import estimated_risk

DEFAULT_METHODS = ("hard", "soft", "hybrid", "hybrid-confidence", "hybrid-risk")
DEFAULT_SEEDS = (0, 1, 2)
METRICS = ("exposure_bias", "bridge_accuracy", "garden_entropy_ratio", "teacher_forced_kl", "student_rollout_kl")


@dataclass(frozen=True)
class StudentMetrics:
    exposure_bias: float
    exposure_bias_standard_error: float
    student_rollout_kl: float
    teacher_forced_kl: float
    bridge_accuracy: float
    garden_entropy_ratio: float


@dataclass
class StudyResult:
    runs: list[dict]  # one per (method, seed): {"method", "seed", **StudentMetrics}
    summary: dict[str, dict[str, dict[str, float]]]  # method -> metric -> {mean, low, high}
    comparisons: dict[str, dict[str, float]]  # "hybrid... - hard|soft" -> exposure-bias difference {mean, low, high}
    paths: dict[str, str] = field(default_factory=dict)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis."""
    return -np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0).sum(axis=-1)


def evaluate_student(process: FiniteStateTeacher, student: StudentFn, rollouts: int, seed: int) -> StudentMetrics:
    """The study's measurements of one student (see the module docstring)."""
    exposure = mc_exposure(process, student, rollouts, seed)
    texts, text_probs = process.continuations(process.initial, process.horizon)
    states = process.states_along(texts)[:, :-1]
    student_probs = student(texts)[:, :-1]
    weight = np.broadcast_to(text_probs[:, None], states.shape)
    targets = process.role[states] == ROLES.index("bridge_target")
    gardens = process.role[states] == ROLES.index("garden")
    correct = student_probs.argmax(axis=-1) == texts
    student_entropy = (weight * entropy(student_probs))[gardens].sum()
    teacher_entropy = (weight * entropy(process.teacher[states]))[gardens].sum()
    return StudentMetrics(
        exposure_bias=exposure.bias,
        exposure_bias_standard_error=exposure.standard_error,
        student_rollout_kl=exposure.student_rollout_kl,
        teacher_forced_kl=exposure.teacher_forced_kl,
        bridge_accuracy=float(weight[targets & correct].sum() / weight[targets].sum()),
        garden_entropy_ratio=float(student_entropy / teacher_entropy),
    )


def interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean and a two-sided t interval over seeds (NaN bounds with fewer than two values)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan")}
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def example_kappa(
    process: FiniteStateTeacher, student: StudentFn, tokens: Sequence[int], horizon: int | None = None
) -> list[PrefixKappa]:
    """Exact prefix-level kappa before each token of `tokens`."""
    return [prefix_kappa(process, student, tokens[:t], horizon) for t in range(len(tokens))]


def _hover(process: FiniteStateTeacher, token: int, at: PrefixKappa) -> str:
    """HTML details of one position: the written token's kappa, the risk, and both distributions."""
    vocab = process.vocab
    lines = [
        f"<b>{html.escape(vocab[token])}</b>: kappa {at.kappa[token]:+.4f}, Q {at.q[token]:.4f}",
        f"risk (teacher-weighted spread) {at.risk:.4f}; student kappa {at.student_kappa:+.4f}",
        "teacher: " + ", ".join(f"{html.escape(vocab[a])} {at.teacher[a]:.2f}" for a in np.flatnonzero(at.teacher)),
        "student top 5 (p, kappa): "
        + ", ".join(
            f"{html.escape(vocab[a])} {at.student[a]:.3f} ({at.kappa[a]:+.2f})" for a in np.argsort(-at.student)[:5]
        ),
    ]
    return "<br>".join(lines)


def write_heatmaps(
    process: FiniteStateTeacher,
    tokens: Sequence[int],
    kappas: dict[str, list[PrefixKappa]],
    out_dir: Path,
    horizon: int | None = None,
) -> dict[str, str]:
    """kappa_heatmap.png and kappa_heatmap.html for one example text, a row per method."""
    words = [process.vocab[t] for t in tokens]
    methods = list(kappas)
    teacher_logits = torch.from_numpy(np.stack([k.teacher for k in next(iter(kappas.values()))])).log()
    hovers = [[_hover(process, t, at) for t, at in zip(tokens, kappas[m], strict=True)] for m in methods]
    panels = [
        Panel(
            "risk = sum_a p_T(a) |kappa(a)|: how much the teacher's own choice here moves the student's future loss",
            words,
            methods,
            np.array([[at.risk for at in kappas[m]] for m in methods]),
            hovers=hovers,
        ),
        Panel(
            "student kappa = sum_a p_S(a) kappa(a): growth of future loss when the student picks this token",
            words,
            methods,
            np.array([[at.student_kappa for at in kappas[m]] for m in methods]),
            cmap="RdBu_r",
            centred=True,
            hovers=hovers,
        ),
        Panel(
            "kappa of the written token",
            words,
            methods,
            np.array([[at.kappa[t] for t, at in zip(tokens, kappas[m], strict=True)] for m in methods]),
            cmap="RdBu_r",
            centred=True,
            hovers=hovers,
        ),
        Panel(
            "teacher-only estimate (estimate.estimated_risk: margin x certainty)",
            words,
            ["teacher"],
            estimated_risk(teacher_logits).numpy()[None].astype(float),
            cmap="Purples",
        ),
    ]
    reach = "full horizon" if horizon is None else f"horizon {horizon}"
    title = f"Exact per-token kappa on an example text of the finite-state teacher ({reach})"
    note = (
        "Each row is one method's first-seed student. kappa(a) = Q(a) - sum_a' p_T(a') Q(a'), where Q(a) is the "
        "student's expected summed KL to the teacher over the teacher's continuation after token a (exact: the "
        "teacher's continuations are enumerated and the student reads the real prefix). Hover a token for details."
    )
    png = write_heatmap_png(out_dir / "kappa_heatmap.png", panels, title)
    page = write_token_html(out_dir / "kappa_heatmap.html", panels, title, note)
    return {"heatmap_png": str(png), "heatmap_html": str(page)}


def _cell(stat: dict[str, float], digits: int = 3) -> str:
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def markdown_table(result: StudyResult, seeds: Sequence[int]) -> str:
    """The per-method table (mean [95% interval] over seeds) and the paired exposure-bias differences."""
    lines = [
        f"Finite-state teacher study, seeds {list(seeds)}: mean [95% t interval over seeds].",
        "",
        "| method | exposure bias | bridge accuracy | garden entropy ratio | teacher-forced KL | own-text KL |",
        "|---|---|---|---|---|---|",
    ]
    for method, stat in result.summary.items():
        lines.append(f"| {method} | " + " | ".join(_cell(stat[m]) for m in METRICS) + " |")
    lines += ["", "Paired exposure-bias differences (same seed: same texts, same initial weights):", ""]
    lines += ["| difference | mean [95% interval] |", "|---|---|"]
    lines += [f"| {name} | {_cell(stat)} |" for name, stat in result.comparisons.items()]
    return "\n".join(lines) + "\n"


def run_study(
    out_dir: str | Path,
    methods: Sequence[str] = DEFAULT_METHODS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    config: GRUStudentConfig | None = None,
    rollouts: int = 4000,
    example_seed: int = 11,
    heatmap_horizon: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> StudyResult:
    """Train, measure and summarise every (method, seed); write study.json, study.md and the kappa heat maps."""
    for method in methods:
        if method not in STUDY_METHODS:
            raise unknown_choice("study method", method, STUDY_METHODS)
    config = config or GRUStudentConfig()
    out_dir = Path(out_dir)
    process = FiniteStateTeacher()
    runs, first_students = [], {}
    for method in methods:
        for seed in seeds:
            student = model_student(train_student(process, method, seed, config))
            first_students.setdefault(method, student)
            metrics = evaluate_student(process, student, rollouts, seed=10_000 + seed)
            runs.append({"method": method, "seed": seed, **asdict(metrics)})
            log(f"{method} seed {seed}: exposure bias {metrics.exposure_bias:.4f}")
    by_method = {m: [r for r in runs if r["method"] == m] for m in methods}
    summary = {m: {k: interval([r[k] for r in rs]) for k in METRICS} for m, rs in by_method.items()}
    comparisons = {
        f"{a} - {b}": interval(
            [x["exposure_bias"] - y["exposure_bias"] for x, y in zip(by_method[a], by_method[b], strict=True)]
        )
        for a in methods
        if a.startswith("hybrid")
        for b in ("hard", "soft")
        if b in by_method
    }
    result = StudyResult(runs, summary, comparisons)
    example = process.sample(1, seed=example_seed)
    tokens = [int(t) for t in example.tokens[0, : example.lengths[0]]]
    kappas = {}
    for method, student in first_students.items():
        log(f"kappa along the example text: {method}")
        kappas[method] = example_kappa(process, student, tokens, heatmap_horizon)
    result.paths = write_heatmaps(process, tokens, kappas, out_dir, heatmap_horizon)
    result.paths["table"] = str(atomic_write_text(out_dir / "study.md", markdown_table(result, seeds)))
    report = asdict(result) | {
        "config": asdict(config) | {"rollouts": rollouts, "seeds": list(seeds), "methods": list(methods)},
        "example": {
            "text": process.decode(tokens),
            "risk": {m: [k.risk for k in ks] for m, ks in kappas.items()},
            "student_kappa": {m: [k.student_kappa for k in ks] for m, ks in kappas.items()},
            "kappa_of_token": {
                m: [float(k.kappa[t]) for t, k in zip(tokens, ks, strict=True)] for m, ks in kappas.items()
            },
        },
    }
    result.paths["json"] = str(out_dir / "study.json")
    atomic_write_json(out_dir / "study.json", report | {"paths": result.paths})
    return result
