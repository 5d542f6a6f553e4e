"""Every method's loss on small hand-computable cases."""

from __future__ import annotations

import math

import pytest
import torch

from kdcore.errors import HarnessError
from trainers.objectives import METHODS, TeacherRows, cross_entropy_rows, load_method
from trainers.topk import topk_logprobs

LOG2 = math.log(2.0)


def full_topk(teacher_logits: torch.Tensor) -> TeacherRows:
    """Top-k soft labels keeping the whole (tiny) vocabulary: exact, so hand values apply."""
    ids, logprobs = topk_logprobs(teacher_logits, teacher_logits.shape[-1], dtype=torch.float32)
    return TeacherRows(ids, logprobs)


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


STUDENT = torch.zeros(1, 2)  # q = (1/2, 1/2)
TEACHER = torch.log(torch.tensor([[0.8, 0.2]]))  # p = (0.8, 0.2)
TARGET = torch.tensor([0])


def losses(name: str, teacher: TeacherRows | None = None, progress: float = 0.0, **params) -> dict[str, torch.Tensor]:
    return load_method(name, **params).token_losses(STUDENT, TARGET, teacher, progress)


def test_sft_and_hard_are_cross_entropy() -> None:
    for name in ("sft", "hard"):
        assert losses(name)["loss"].item() == pytest.approx(LOG2)


@pytest.mark.parametrize("signal", ["topk", "online"])
def test_soft_forward_kl(signal: str) -> None:
    teacher = full_topk(TEACHER) if signal == "topk" else TeacherRows(logits=TEACHER)
    assert losses("soft", teacher)["loss"].item() == pytest.approx(kl([0.8, 0.2], [0.5, 0.5]), abs=1e-6)
    reverse = losses("soft", teacher, divergence="rkl")["loss"].item()
    assert reverse == pytest.approx(kl([0.5, 0.5], [0.8, 0.2]), abs=1e-6)


def test_hybrid_static_mixes_hard_and_soft() -> None:
    out = losses("hybrid", full_topk(TEACHER), alpha=0.25)
    expected = 0.75 * LOG2 + 0.25 * kl([0.8, 0.2], [0.5, 0.5])
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)
    assert out["soft_weight"].item() == pytest.approx(0.25)


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_cross_entropy_rows_equal_torch_cross_entropy(scale: float) -> None:
    torch.manual_seed(1)
    logits, targets = (torch.randn(9, 30) * scale).requires_grad_(True), torch.randint(0, 30, (9,))
    weights = torch.randn(9)
    ours = cross_entropy_rows(logits, targets)
    torch_ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    assert torch.allclose(ours, torch_ce, rtol=1e-6, atol=1e-6)
    (got,) = torch.autograd.grad((ours * weights).sum(), logits)
    (expected,) = torch.autograd.grad((torch_ce * weights).sum(), logits)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_hybrid_gradient_is_the_mix_of_the_two_terms_gradients() -> None:
    """Hybrid computes its two terms from one softmax; value and gradient equal the two computed apart."""
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 9, requires_grad=True), torch.randint(0, 9, (6,))
    teacher = TeacherRows(*topk_logprobs(torch.randn(6, 9) * 2, 3))
    hybrid = load_method("hybrid", alpha=0.3).token_losses(logits, targets, teacher, 0.0)["loss"]
    soft = load_method("soft").token_losses(logits, targets, teacher, 0.0)["loss"]
    apart = 0.7 * torch.nn.functional.cross_entropy(logits, targets, reduction="none") + 0.3 * soft
    assert torch.allclose(hybrid, apart, atol=1e-6)
    (got,) = torch.autograd.grad(hybrid.sum(), logits)
    (expected,) = torch.autograd.grad(apart.sum(), logits)
    assert torch.allclose(got, expected, atol=1e-6)


def test_hybrid_confidence_weight_is_one_minus_teacher_prob_of_token() -> None:
    assert losses("hybrid", full_topk(TEACHER), weighting="confidence")["soft_weight"].item() == pytest.approx(0.2)


def test_hybrid_entropy_weight_is_smoothness() -> None:
    uniform, peaked = torch.zeros(1, 2), torch.tensor([[30.0, -30.0]])
    assert losses("hybrid", full_topk(uniform), weighting="entropy")["soft_weight"].item() == pytest.approx(1.0)
    assert losses("hybrid", full_topk(peaked), weighting="entropy")["soft_weight"].item() == pytest.approx(
        0.0, abs=1e-6
    )
    # p = (0.8, 0.2), gamma = 2: sum p^2 = 0.68, rescaled from [1/2, 1]: 1 - (0.68 - 0.5) / 0.5 = 0.64
    assert losses("hybrid", full_topk(TEACHER), weighting="entropy")["soft_weight"].item() == pytest.approx(0.64)


def test_hybrid_curriculum_ramps_to_alpha() -> None:
    weight = [
        losses("hybrid", full_topk(TEACHER), progress=t, weighting="curriculum", alpha=0.6, warmup=0.5)["soft_weight"]
        for t in (0.0, 0.25, 0.5, 0.9)
    ]
    assert [w.item() for w in weight] == pytest.approx([0.0, 0.3, 0.6, 0.6])


def test_hybrid_margin_entropy_weight() -> None:
    # this harness's estimate (was `risk`): uniform teacher: margin 0, all soft; one-hot teacher: all hard
    uniform = full_topk(torch.zeros(1, 2))
    assert losses("hybrid", uniform, weighting="margin-entropy")["soft_weight"].item() == pytest.approx(1.0)
    peaked = full_topk(torch.tensor([[30.0, -30.0]]))
    assert losses("hybrid", peaked, weighting="margin-entropy")["soft_weight"].item() == pytest.approx(0.0, abs=1e-6)
    # p = (0.8, 0.2): margin 0.6, certainty 1 - H(p) / log V, V = the 3 buckets (2 ids + an empty tail)
    h = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    weight = losses("hybrid", full_topk(TEACHER), weighting="margin-entropy")["soft_weight"].item()
    assert weight == pytest.approx(1 - 0.6 * (1 - h / math.log(3)), rel=1e-6)


def test_hybrid_wsl_weight() -> None:
    # student q(y) = 1/2, teacher p(y) = 0.8: w = 1 - exp(-log q / log p)
    weight = losses("hybrid", full_topk(TEACHER), weighting="wsl")["soft_weight"].item()
    assert weight == pytest.approx(1 - math.exp(-math.log(0.5) / math.log(0.8)), rel=1e-6)
    # a certain teacher (log p = 0): the soft labels are fully trusted
    certain = full_topk(torch.tensor([[60.0, -60.0]], dtype=torch.float64))
    assert losses("hybrid", certain, weighting="wsl")["soft_weight"].item() == pytest.approx(1.0)


def test_hybrid_reverse_adaptive_weight_is_teacher_prob_of_token() -> None:
    assert losses("hybrid", full_topk(TEACHER), weighting="reverse-adaptive")["soft_weight"].item() == pytest.approx(
        0.8
    )


def test_hybrid_entropy_weight_at_the_release_gamma() -> None:
    # gamma = 0.1 < 1: sum p^0.1 runs from 1 (one-hot) to V^0.9 (uniform); same 0..1 rescaling
    collision = 0.8**0.1 + 0.2**0.1
    expected = 1 - (collision - 2**0.9) / (1 - 2**0.9)
    weight = losses("hybrid", full_topk(TEACHER), weighting="entropy", gamma=0.1)["soft_weight"].item()
    assert weight == pytest.approx(expected, rel=1e-6)


def test_hybrid_chi2_hard_term() -> None:
    # alpha = 0: hard term only; CE = log 2 against the uniform student
    out = losses("hybrid", full_topk(TEACHER), alpha=0.0, hard_term="chi2", chi2_alpha=0.25)
    assert out["loss"].item() == pytest.approx(LOG2 + LOG2**2 / (4 * 0.25), rel=1e-6)
    assert out["hard_loss"].item() == pytest.approx(LOG2 + LOG2**2, rel=1e-6)
    logits = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, 1])
    from trainers.bridge_garden import hard_term
    from trainers.objectives import cross_entropy_rows

    assert torch.autograd.gradcheck(lambda z: hard_term("chi2", cross_entropy_rows(z, targets), 0.5), (logits,))


def test_bridge_garden_preset() -> None:
    from trainers.bridge_garden import apply_preset

    assert apply_preset("hybrid", "bridge-garden", {}) == {"alpha": 0.2, "gamma": 0.1, "warmup": 0.2}
    assert apply_preset("hybrid", "bridge-garden", {"alpha": 0.5})["alpha"] == 0.5  # explicit values win
    assert apply_preset("soft", None, {"divergence": "rkl"}) == {"divergence": "rkl"}
    with pytest.raises(HarnessError, match="unknown preset 'paper'"):
        apply_preset("hybrid", "paper", {})
    with pytest.raises(HarnessError, match="preset 'bridge-garden' has no values for method 'soft'"):
        apply_preset("soft", "bridge-garden", {})
    load_method("hybrid", **apply_preset("hybrid", "bridge-garden", {"weighting": "entropy"}))


def test_gkd_is_jsd_and_hybrid_gkd_adds_argmax_ce() -> None:
    teacher = TeacherRows(logits=torch.tensor([[30.0, -30.0]]))  # p ~ (1, 0)
    student = torch.tensor([[-30.0, 30.0]])  # q ~ (0, 1): JSD(0.5) = log 2
    gkd = load_method("gkd").token_losses(student, TARGET, teacher, 0.0)["loss"].item()
    assert gkd == pytest.approx(LOG2, abs=1e-5)
    hybrid = load_method("hybrid-gkd", alpha=0.5).token_losses(STUDENT, TARGET, TeacherRows(logits=TEACHER), 0.0)
    jsd = load_method("gkd").token_losses(STUDENT, TARGET, TeacherRows(logits=TEACHER), 0.0)["loss"]
    assert hybrid["loss"].item() == pytest.approx(0.5 * LOG2 + 0.5 * jsd.item(), abs=1e-6)


def test_loss_gradients_reach_student_logits() -> None:
    for name in METHODS:
        logits = STUDENT.clone().requires_grad_(True)
        online = METHODS[name].on_policy or load_method(name).data_plan().teacher_signal == "online"
        teacher = TeacherRows(logits=TEACHER) if online else full_topk(TEACHER)
        teacher.from_student = torch.tensor([name == "distillm2"])
        load_method(name).token_losses(logits, TARGET, teacher, 0.5)["loss"].sum().backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown method 'nope'"),
        ("hybrid", {"weighting": "magic"}, "unknown weighting for HybridParams: 'magic'"),
        ("hybrid", {"weighting": "risk"}, "valid choices: confidence, curriculum, entropy, margin-entropy"),
        ("hybrid", {"alpha": 2.0}, "'alpha' of HybridParams: 2.0 is not allowed; allowed: float in \\[0, 1\\]"),
        ("hybrid", {"alpha": "high"}, "'alpha' of HybridParams: 'high' is not allowed"),
        ("hybrid", {"alpha": True}, "'alpha' of HybridParams: True is not allowed"),
        ("hybrid", {"warmup": float("nan")}, "'warmup'"),
        ("hybrid", {"weighting": "entropy", "gamma": 1.0}, "gamma = 1"),
        ("hybrid", {"hard_term": "mse"}, "unknown hard_term"),
        ("soft", {"colour": 1}, "unknown parameter"),
        ("soft", {"temperature": 0}, "'temperature' of SoftParams: 0.0 is not allowed"),
        ("soft", {"divergence": "kl"}, "unknown divergence 'kl'"),
        ("soft", {"divergence": "jsd", "div_params": {"beta": 1.5}}, "jsd beta must be in"),
        ("soft", {"divergence": "csd", "div_params": {"skew": 0.1}}, "unknown parameter 'skew' for divergence 'csd'"),
        ("soft", {"select_top": 0.0}, "'select_top'"),
        ("soft", {"div_params": [1]}, "'div_params' of SoftParams"),
        ("gkd", {"beta": 1.5}, "'beta' of GKDParams"),
        ("gkd", {"max_new_tokens": 0}, "'max_new_tokens'"),
        ("taid", {"t_start": 0.9, "t_end": 0.5}, "t_start <= t_end"),
        ("taid", {"t_start": 1.0}, "'t_start'"),
        ("distillm2", {"skew_teacher": 0.005, "adaptive": True}, "adaptive skew needs"),
        ("distillm2", {"beta": 3.0}, "'beta' of DistiLLM2Params"),
    ],
)
def test_bad_method_arguments(name: str, params: dict, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        load_method(name, **params)


def test_every_parameter_is_documented() -> None:
    from trainers.params import describe

    for name, cls in METHODS.items():
        for row in describe(cls.Params):
            assert row["meaning"] != "-" and row["source"] != "-" and row["allowed"] != "-", (name, row["name"])


def invoke(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    import sys

    from harness.cli import main

    monkeypatch.setattr(sys, "argv", ["harness", *args])
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    return done.value.code, captured.out + captured.err


def test_harness_methods_shows_each_parameter_with_its_range_and_source(monkeypatch, capsys) -> None:
    code, out = invoke(monkeypatch, capsys, "methods")
    assert code == 0
    expected = (
        "csd",
        "dld",
        "taid",
        "distillm2",
        "margin-entropy",
        "wsl",
        "select_top",
        "float in [0, 1]",
        "bridge-garden",
        "jsd-skew",
        "akl-entropy",
        "Kim et al. 2025",
        "SE-KD",
        "t_start",
    )
    for text in expected:
        assert text in out, text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--preset", "paper"), "unknown preset 'paper'; valid choices: bridge-garden"),
        (("--method", "soft", "--preset", "bridge-garden"), "preset 'bridge-garden' has no values for method 'soft'"),
        (("--param", "alpha=2"), "method 'hybrid': parameter 'alpha' of HybridParams: 2.0 is not allowed"),
        (("--method", "csd", "--param", 'div_params={"weights": "x"}'), "csd weights 'x' unknown"),
        (("--method", "gkd", "--teacher-signal", "topk"), "--teacher-signal topk: method 'gkd' trains with the online"),
        (("--method", "distillm2", "--teacher-signal", "topk"), "method 'distillm2' trains with the online teacher"),
        (("--method", "hard", "--teacher-signal", "online"), "method 'hard' reads no teacher signal; drop it"),
        (("--method", "soft", "--teacher-signal", "cache"), "unknown teacher signal 'cache'"),
    ],
)
def test_bad_method_input_fails_in_one_line_before_anything_loads(monkeypatch, capsys, tmp_path, args, message):
    code, out = invoke(monkeypatch, capsys, "run", "--pair", "tiny", "--results-dir", str(tmp_path), *args)
    assert code == 2 and message in out and len(out.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("method", "asked", "used"),
    [
        ("hard", None, "none"),
        ("soft", None, "topk"),
        ("soft", "online", "online"),
        ("gkd", None, "online"),
        ("gkd", "online", "online"),
        ("hybrid-gkd", None, "online"),
        ("distillm2", None, "online"),
    ],
)
def test_the_record_names_the_teacher_signal_the_method_uses(method: str, asked: str | None, used: str) -> None:
    from harness.pipeline import RunSpec, check_spec, recorded_settings

    spec = RunSpec(pair="tiny", method=method, teacher_signal=asked)
    pair, objective, config = check_spec(spec)
    assert objective.data_plan(asked).teacher_signal == used
    assert recorded_settings(spec, pair, objective, config)["train_config"]["teacher_signal"] == used
