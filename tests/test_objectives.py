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
    out = losses("hybrid", full_topk(TEACHER), distill_weight=0.25)
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
    """Hybrid's static mix (the release's phi_type sft, ab at (1, 0) = forward KL) on top-k buckets: value and
    gradient equal cross-entropy and the soft method's forward KL computed apart."""
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 9, requires_grad=True), torch.randint(0, 9, (6,))
    teacher = TeacherRows(*topk_logprobs(torch.randn(6, 9) * 2, 3))
    hybrid = load_method("hybrid", distill_weight=0.3).token_losses(logits, targets, teacher, 0.0)["loss"]
    soft = load_method("soft").token_losses(logits, targets, teacher, 0.0)["loss"]
    apart = 0.7 * torch.nn.functional.cross_entropy(logits, targets, reduction="none") + 0.3 * soft
    assert torch.allclose(hybrid, apart, atol=1e-6)
    (got,) = torch.autograd.grad(hybrid.sum(), logits)
    (expected,) = torch.autograd.grad(apart.sum(), logits)
    assert torch.allclose(got, expected, atol=1e-6)


def test_hybrid_adap_sft_weight_is_one_minus_teacher_prob_of_token() -> None:
    assert losses("hybrid", full_topk(TEACHER), weighting="adap_sft")["soft_weight"].item() == pytest.approx(0.2)
    reverse = losses("hybrid", full_topk(TEACHER), weighting="reverse_adap_sft")["soft_weight"].item()
    assert reverse == pytest.approx(0.8)


def test_hybrid_entropy_weight_is_smoothness() -> None:
    uniform, peaked = torch.zeros(1, 2), torch.tensor([[30.0, -30.0]])

    def weight(teacher: torch.Tensor, **params) -> float:
        return losses("hybrid", full_topk(teacher), weighting="entropy_sft_distill", **params)["soft_weight"].item()

    assert weight(uniform) == pytest.approx(1.0)
    assert weight(peaked, entropy_gamma=2.0) == pytest.approx(0.0, abs=1e-6)
    assert weight(peaked) == pytest.approx(math.exp(-6) / (2**0.9 - 1), rel=1e-3)  # p^0.1 of e^-60 is e^-6
    # p = (0.8, 0.2), gamma = 2: sum p^2 = 0.68, rescaled from [1/2, 1]: 1 - (0.68 - 0.5) / 0.5 = 0.64
    assert weight(TEACHER, entropy_gamma=2.0) == pytest.approx(0.64)
    # the release's gamma 0.1: sum p^0.1 runs from 1 (one-hot) to V^0.9 (uniform)
    assert weight(TEACHER) == pytest.approx((0.8**0.1 + 0.2**0.1 - 1) / (2**0.9 - 1), rel=1e-6)


def test_hybrid_curriculum_ramps_to_distill_weight() -> None:
    weight = [
        losses(
            "hybrid",
            full_topk(TEACHER),
            progress=t,
            weighting="curriculum_weight",
            distill_weight=0.6,
            curriculum_warmup_ratio=0.5,
        )["soft_weight"]
        for t in (0.0, 0.25, 0.5, 0.9)
    ]
    assert [w.item() for w in weight] == pytest.approx([0.0, 0.3, 0.6, 0.6])


def test_hybrid_margin_entropy_weight() -> None:
    # this harness's estimate: uniform teacher: margin 0, all soft; one-hot teacher: all hard
    uniform = full_topk(torch.zeros(1, 2))
    assert losses("hybrid", uniform, weighting="margin-entropy")["soft_weight"].item() == pytest.approx(1.0)
    peaked = full_topk(torch.tensor([[30.0, -30.0]]))
    assert losses("hybrid", peaked, weighting="margin-entropy")["soft_weight"].item() == pytest.approx(0.0, abs=1e-6)
    # p = (0.8, 0.2): margin 0.6, certainty 1 - H(p) / log V, V = the 3 buckets (2 ids + an empty tail)
    h = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    weight = losses("hybrid", full_topk(TEACHER), weighting="margin-entropy")["soft_weight"].item()
    assert weight == pytest.approx(1 - 0.6 * (1 - h / math.log(3)), rel=1e-6)


def test_hybrid_wsl_weight() -> None:
    # student q(y) = 1/2, teacher p(y) = 0.8: distill_weight * (1 - exp(-log q / log p))
    weight = losses("hybrid", full_topk(TEACHER), weighting="wsl")["soft_weight"].item()
    assert weight == pytest.approx(0.2 * (1 - math.exp(-math.log(0.5) / math.log(0.8))), rel=1e-6)
    # a certain teacher (|log p| < 1e-8 becomes -1e-8): the ratio is clamped to 10
    certain = full_topk(torch.tensor([[60.0, -60.0]], dtype=torch.float64))
    assert losses("hybrid", certain, weighting="wsl")["soft_weight"].item() == pytest.approx(0.2 * -math.expm1(-10))


def test_gkd_is_jsd_and_hybrid_gkd_adds_argmax_ce() -> None:
    teacher = TeacherRows(logits=torch.tensor([[30.0, -30.0]]))  # p ~ (1, 0)
    student = torch.tensor([[-30.0, 30.0]])  # q ~ (0, 1): JSD(0.5) = log 2
    gkd = load_method("gkd").token_losses(student, TARGET, teacher, 0.0)["loss"].item()
    assert gkd == pytest.approx(LOG2, abs=1e-5)
    # hybrid-gkd: lambda_fkl * KL(P||Q) + lambda_sft * CE(argmax P); argmax P = 0, CE = log 2
    hybrid = load_method("hybrid-gkd", lambda_fkl=0.5, lambda_sft=0.25)
    out = hybrid.token_losses(STUDENT, TARGET, TeacherRows(logits=TEACHER), 0.0)
    assert out["loss"].item() == pytest.approx(0.5 * kl([0.8, 0.2], [0.5, 0.5]) + 0.25 * LOG2, abs=1e-6)


def test_loss_gradients_reach_student_logits() -> None:
    for name in METHODS:
        logits = STUDENT.clone().requires_grad_(True)
        online = load_method(name).data_plan().teacher_signal == "online"
        teacher = TeacherRows(logits=TEACHER) if online else full_topk(TEACHER)
        teacher.row_values["from_student"] = torch.tensor([name == "distillm2"])
        load_method(name).token_losses(logits, TARGET, teacher, 0.5)["loss"].sum().backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown method 'nope'"),
        ("hybrid", {"weighting": "magic"}, "unknown weighting for HybridParams: 'magic'"),
        ("hybrid", {"weighting": "static"}, "valid choices: adap_sft, chi2, chi2_curriculum, curriculum_weight"),
        (
            "hybrid",
            {"distill_weight": 2.0},
            "'distill_weight' of HybridParams: 2.0 is not allowed; allowed: float in \\[0, 1\\]",
        ),
        ("hybrid", {"distill_weight": "high"}, "'distill_weight' of HybridParams: 'high' is not allowed"),
        ("hybrid", {"distill_weight": True}, "'distill_weight' of HybridParams: True is not allowed"),
        ("hybrid", {"curriculum_warmup_ratio": float("nan")}, "'curriculum_warmup_ratio'"),
        ("hybrid", {"weighting": "entropy_sft_distill", "entropy_gamma": 1.0}, "entropy_gamma = 1"),
        ("hybrid", {"divergence": "fkl"}, "unknown divergence for HybridParams"),
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
        "distill_weight",
        "jsd-skew",
        "lambda_sft",
        "Kim et al. 2025",
        "SE-KD",
        "t_start",
    )
    for text in expected:
        assert text in out, text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--param", "distill_weight=2"),
            "method 'hybrid': parameter 'distill_weight' of HybridParams: 2.0 is not allowed",
        ),
        (("--div", "fkl"), "method 'hybrid': unknown divergence for HybridParams: 'fkl'"),
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


def test_the_settings_rules_load_without_torch_and_every_method_is_found_from_the_registry_alone() -> None:
    import subprocess
    import sys

    light = "import sys, harness.pairs, kdcore.train_settings; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", light], capture_output=True, text=True, check=True).stdout == "False\n"
    names = "from trainers.objectives import METHODS; print(','.join(METHODS.names()))"
    found = subprocess.run([sys.executable, "-c", names], capture_output=True, text=True, check=True).stdout
    assert set(found.strip().split(",")) >= {"csd", "dld", "distillm", "distillm2", "taid", "gkd", "hybrid", "sft"}
