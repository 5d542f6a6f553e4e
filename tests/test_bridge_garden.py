"""The Bridge-Garden release's losses (`trainers.release_loss`) against a float64 transcription written here from
reading ghwang-s/bridge_garden_hybrid_kd_release@07f00fc (llm_hybrid_kd/trl_trainer/sft_trainer.py,
hybrid_gkd_trainer.py), in the release's layout: [B, T, V] tensors, masked sums over valid positions."""

from __future__ import annotations

import math

import pytest
import torch

from kdcore.errors import HarnessError
from trainers import load_method, release_loss
from trainers.bridge_garden import DIVS, PHI_TYPES
from trainers.objectives import TeacherRows
from trainers.topk import topk_logprobs

torch.set_num_threads(1)
EPS32 = torch.finfo(torch.float32).eps
DEFAULTS = {
    "distill_weight": 0.2,
    "distill_alpha": 1.0,
    "distill_beta": 0.0,
    "entropy_gamma": 0.1,
    "curriculum_warmup_ratio": 0.2,
    "alpha": 0.05,
    "gamma": 0.9999,
    "temperature_min": 1.0,
    "temperature_max": 4.0,
    "entropy_reg_weight": 0.1,
}
USES_DIV = ("sft", "curriculum_weight", "reverse_curriculum_weight", "soft_kd_entropy_reg", "chi2", "chi2_curriculum")


def ab_divergence(p, q, a, b):
    """The alpha-beta divergence per position, with the release's branches (|x| < 1e-8)."""
    small = 1e-8
    if abs(a) < small and abs(b) < small:
        return 0.5 * ((q.log() - p.log()) ** 2).sum(-1)
    if abs(a) < small:
        return (q**b * (b * (q.log() - p.log()) - 1) + p**b).sum(-1) / b**2
    if abs(b) < small:
        return (p**a * (a * (p.log() - q.log()) - 1) + q**a).sum(-1) / a**2
    if abs(a + b) < small:
        r = q / p
        return (a * r.log() + r ** (-a) - 1).sum(-1) / a**2
    return -(p**a * q**b - a / (a + b) * p ** (a + b) - b / (a + b) * q ** (a + b)).sum(-1) / (a * b)


def kl(x, y):
    return (x * (x.log() - y.log())).sum(-1)


def divergence(div, p, q, prm):
    if div == "ab":
        return ab_divergence(p, q, prm["distill_alpha"], prm["distill_beta"])
    if div == "sfkl":
        return -(p * torch.clamp(0.1 * p + 0.9 * q, min=EPS32).log()).sum(-1)
    if div == "srkl":
        return (q * (q.log() - torch.clamp(0.9 * p + 0.1 * q, min=EPS32).log())).sum(-1)
    if div == "tv":
        return (p - q).abs().sum(-1) / 2
    if div == "akl":
        e_t = torch.exp(0.5 * (p * (p + 1e-10).log()).sum(-1))  # exp(-mu * H(P))
        e_s = torch.exp(0.5 * (q * (q + 1e-10).log()).sum(-1))
        return e_t / (e_t + e_s) * kl(p, q) + e_s / (e_t + e_s) * kl(q, p)
    assert div == "jsd"
    m = 0.9 * p + 0.1 * q
    return 0.1 * kl(q, m) + 0.9 * kl(p, m)


def chi2_loss(s, labels, alpha, gamma):
    """`_compute_kd_loss` on aligned [B, T] tensors."""
    mask = labels != -100
    n = mask.sum()
    value = torch.where(mask, s.logsumexp(-1), 0.0)
    q_value = torch.where(mask, s.gather(-1, labels.clamp(min=0)[..., None])[..., 0], 0.0)
    after = torch.zeros_like(value)
    after[:, :-1] = value[:, 1:]
    after = torch.where(mask, after, 0.0)
    k = mask.long().cumsum(1) - 1
    g = torch.where(mask, gamma ** k.clamp(min=0).double(), 0.0)

    def phi(x):
        return x - x**2 / 4

    data = (g * (phi(alpha * (q_value - gamma * after)) / alpha - (value - gamma * after)) * mask).sum() / n
    last = mask & (k == k.max(1, keepdim=True).values)
    v_last, g_last = (torch.where(last, x, 0.0).sum(1) for x in (value, g))
    c = alpha * (1 - gamma)
    terminal = (g_last / c * phi(c * v_last) - g_last * v_last)[mask.any(1)].mean()
    return -(data + terminal)


def reference(phi, s, t, labels, progress=0.0, div="ab", **overrides):
    """The release's compute_loss for `phi` (teacher present), transcribed in float64."""
    prm = {**DEFAULTS, **overrides}
    mask = (labels != -100).double()
    n = mask.sum()

    def mean(x):
        return (x * mask).sum() / n

    q, p = s.softmax(-1), t.softmax(-1)
    y = labels.clamp(min=0)[..., None]
    ce = -s.log_softmax(-1).gather(-1, y)[..., 0]
    p_y, q_y = p.gather(-1, y)[..., 0], q.gather(-1, y)[..., 0]
    ab = ab_divergence(p, q, prm["distill_alpha"], prm["distill_beta"])
    w = prm["distill_weight"]
    ramp = progress / prm["curriculum_warmup_ratio"]
    before = progress < prm["curriculum_warmup_ratio"]
    if phi == "hybrid_gkd":
        hard = -s.log_softmax(-1).gather(-1, t.argmax(-1, keepdim=True))[..., 0]
        return prm["lambda_fkl"] * mean(ab) + prm["lambda_sft"] * mean(hard)
    if phi in ("adap_sft", "reverse_adap_sft"):
        hard_w = p_y if phi == "adap_sft" else 1 - p_y
        return mean(hard_w * ce) + mean((1 - hard_w) * ab)
    if phi.startswith("entropy_sft"):
        g = prm["entropy_gamma"]
        smooth = (((p**g).sum(-1) - 1) / (s.shape[-1] ** (1 - g) - 1)).clamp(0, 1)
        soft_w = smooth if phi == "entropy_sft_distill" else 1 - smooth
        return mean((1 - soft_w) * ce) + mean(soft_w * ab)
    if phi.endswith("wsl"):
        log_q, log_p = q_y.clamp(min=1e-8).log(), p_y.clamp(min=1e-8).log()
        log_p = torch.where(log_p.abs() < 1e-8, -1e-8, log_p)
        ratio = (log_q / log_p).clamp(-10, 10)
        r = (1 - torch.exp(-ratio) if phi == "wsl" else torch.exp(-ratio)).clamp(0, 1).detach()  # under no_grad
        return mean(ce) + w * mean(r * ab)
    if phi.startswith("temperature_schedule"):
        lo, hi = prm["temperature_min"], prm["temperature_max"]
        temp = hi - (hi - lo) * progress if phi.endswith("high_to_low") else lo + (hi - lo) * progress
        kd = mean(temp**2 * kl((t / temp).softmax(-1), (s / temp).softmax(-1)))
    else:
        kd = mean(divergence(div, p, q, prm))
    if phi == "curriculum_weight" or phi == "chi2_curriculum":
        w = ramp * w if before else w
    if phi == "reverse_curriculum_weight":
        w = 1 - ramp * (1 - w) if before else w
    base = chi2_loss(s, labels, prm["alpha"], prm["gamma"]) if phi.startswith("chi2") else mean(ce)
    if phi == "random_label":
        base = mean(-s.log_softmax(-1).gather(-1, prm["drawn"][..., None])[..., 0])
    loss = (1 - w) * base + w * kd
    if phi == "soft_kd_entropy_reg":
        loss = loss - prm["entropy_reg_weight"] * mean(-(q * q.log()).sum(-1))
    return loss


def batch(seed=0, b=3, t=6, v=7):
    g = torch.Generator().manual_seed(seed)
    student = (2 * torch.randn(b, t, v, generator=g, dtype=torch.float64)).requires_grad_(True)
    teacher = 2 * torch.randn(b, t, v, generator=g, dtype=torch.float64)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, :2] = -100  # a prompt
    labels[1, 3] = -100  # a gap inside the completion
    labels[1, -1] = -100  # padding
    if b > 2:
        labels[2, :] = -100  # a sequence with no completion
    return student, teacher, labels


CASES = [(phi, div) for phi in PHI_TYPES for div in (DIVS if phi in USES_DIV else ("ab",))]
AB_POINTS = [(1.0, 0.0), (0.5, 0.5), (0.0, 1.0), (0.3, -0.3), (0.0, 0.0), (0.7, 0.2)]


def drawn_for(phi, labels, seed=5):
    """random_label's labels: the ones release_loss draws from `generator`, for the reference."""
    if phi != "random_label":
        return {}, {}
    drawn = torch.randint(0, 7, labels.shape, generator=torch.Generator().manual_seed(seed))
    return {"generator": torch.Generator().manual_seed(seed)}, {"drawn": drawn}


@pytest.mark.parametrize(("phi", "div"), CASES)
def test_value_and_gradient_equal_the_transcription(phi: str, div: str) -> None:
    student, teacher, labels = batch()
    for progress in (0.05, 0.5):
        kwargs, extra = drawn_for(phi, labels)
        got = release_loss(phi, student, teacher, labels, progress=progress, div=div, **kwargs)
        want = reference(phi, student, teacher, labels, progress, div, **extra)
        assert got.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12)
        (g_got,) = torch.autograd.grad(got, student)
        (g_want,) = torch.autograd.grad(want, student)
        assert torch.allclose(g_got, g_want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("point", AB_POINTS)
def test_every_ab_branch_equals_the_transcription(point: tuple[float, float]) -> None:
    student, teacher, labels = batch(1)
    a, b = point
    for phi in ("sft", "adap_sft", "wsl"):
        got = release_loss(phi, student, teacher, labels, distill_alpha=a, distill_beta=b)
        want = reference(phi, student, teacher, labels, distill_alpha=a, distill_beta=b)
        assert got.item() == pytest.approx(want.item(), rel=1e-10)
        assert torch.allclose(*(torch.autograd.grad(x, student)[0] for x in (got, want)), rtol=1e-9, atol=1e-12)


def test_hybrid_gkd_equals_the_transcription_and_its_defaults() -> None:
    student, teacher, labels = batch(2)
    got = release_loss("hybrid_gkd", student, teacher, labels)
    assert got.item() == pytest.approx(
        reference("hybrid_gkd", student, teacher, labels, lambda_fkl=0.1, lambda_sft=0.9).item()
    )
    custom = release_loss("hybrid_gkd", student, teacher, labels, lambda_fkl=0.5, lambda_sft=0.25)
    want = reference("hybrid_gkd", student, teacher, labels, lambda_fkl=0.5, lambda_sft=0.25)
    assert custom.item() == pytest.approx(want.item(), rel=1e-10)


@pytest.mark.parametrize("phi", ["chi2", "akl", "soft_kd_entropy_reg", "temperature_schedule_low_to_high"])
def test_float64_gradients_pass_gradcheck(phi: str) -> None:
    student, teacher, labels = batch(3, b=2, t=4, v=5)
    labels[1, 3] = 2
    phi_type, div = ("sft", "akl") if phi == "akl" else (phi, "ab")
    assert torch.autograd.gradcheck(
        lambda z: release_loss(phi_type, z, teacher, labels, progress=0.3, div=div, distill_weight=0.4),
        (student.detach().requires_grad_(True),),
    )


@pytest.mark.parametrize("div", DIVS)
def test_divergences_vanish_on_identical_inputs_except_sfkl_a_cross_entropy(div: str) -> None:
    student, _, labels = batch(4)
    got = release_loss("sft", student, student.detach(), labels, div=div, distill_weight=1.0).item()
    if div == "sfkl":  # -sum p log p: the teacher's entropy
        p = student.detach().softmax(-1)
        mask = labels != -100
        assert got == pytest.approx((-(p * p.log()).sum(-1))[mask].mean().item(), rel=1e-10)
    else:
        assert got == pytest.approx(0.0, abs=1e-12)
    same = release_loss("temperature_schedule_high_to_low", student, student.detach(), labels, distill_weight=1.0)
    assert same.item() == pytest.approx(0.0, abs=1e-12)


def test_ab_by_hand() -> None:
    teacher = torch.log(torch.tensor([[[0.8, 0.2]]], dtype=torch.float64))
    student = torch.zeros(1, 1, 2, dtype=torch.float64)  # q = (1/2, 1/2)
    labels = torch.tensor([[0]])

    def ab(a, b):
        return release_loss("sft", student, teacher, labels, distill_weight=1.0, distill_alpha=a, distill_beta=b).item()

    assert ab(1.0, 0.0) == pytest.approx(0.8 * math.log(1.6) + 0.2 * math.log(0.4), rel=1e-12)  # KL(P||Q)
    assert ab(0.0, 1.0) == pytest.approx(0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2), rel=1e-12)  # KL(Q||P)
    assert ab(0.5, 0.5) == pytest.approx(4 * (1 - math.sqrt(0.4) - math.sqrt(0.1)), rel=1e-12)  # 2 sum (vp - vq)^2
    # adap_sft: p(y) CE + (1 - p(y)) KL = 0.8 log 2 + 0.2 KL
    adap = release_loss("adap_sft", student, teacher, labels).item()
    assert adap == pytest.approx(0.8 * math.log(2) + 0.2 * (0.8 * math.log(1.6) + 0.2 * math.log(0.4)), rel=1e-12)


def test_chi2_by_hand() -> None:
    # one sequence of two completion rows, uniform logits over 2 tokens: V = log 2, Q = 0
    student = torch.zeros(1, 3, 2, dtype=torch.float64)
    labels = torch.tensor([[-100, 0, 1]])
    big_v, g, a = math.log(2), 0.9999, 0.05
    row0 = -big_v - a * g**2 * big_v**2 / 4  # (1/a) phi(-a g V) - (V - g V)
    row1 = g * -big_v  # discount g, next value 0: (1/a) phi(0) - V
    terminal = -g * a * (1 - g) * big_v**2 / 4  # (g / (a (1 - g))) phi(a (1 - g) V) - g V
    want = -((row0 + row1) / 2 + terminal)
    assert release_loss("chi2", student, student, labels, distill_weight=0.0).item() == pytest.approx(want, rel=1e-12)
    no_terminal = release_loss("chi2", student, student, labels, distill_weight=0.0, gamma=1.0).item()
    assert no_terminal == pytest.approx(-((-big_v - a * big_v**2 / 4 - big_v) / 2), rel=1e-12)


def test_schedules_at_known_steps() -> None:
    student, teacher, labels = batch(6)
    # 100 steps, warm-up 0.2: step 10 is halfway (weight 0.1), step 20 on is distill_weight
    weight = {p: load_method("hybrid", weighting="curriculum_weight") for p in (0.1, 0.2, 0.7)}
    rows = TeacherRows(logits=teacher[labels != -100].float())
    logits = student.detach()[labels != -100].float()
    for progress, want in ((0.1, 0.1), (0.2, 0.2), (0.7, 0.2)):
        out = weight[progress].token_losses(logits, labels[labels != -100], rows, progress)
        assert out["soft_weight"][0].item() == pytest.approx(want)
    reverse = load_method("hybrid", weighting="reverse_curriculum_weight")
    out = reverse.token_losses(logits, labels[labels != -100], rows, 0.1)
    assert out["soft_weight"][0].item() == pytest.approx(1 - 0.5 * 0.8)
    # the temperature goes from 4 to 1: at progress 1/3 it is 3, so the KD term is 9 KL(P_3 || Q_3)
    got = release_loss("temperature_schedule_high_to_low", student, teacher, labels, progress=1 / 3, distill_weight=1.0)
    mask = labels != -100
    p, q = (teacher / 3).softmax(-1), (student / 3).softmax(-1)
    assert got.item() == pytest.approx(9 * kl(p, q)[mask].mean().item(), rel=1e-10)


def online_and_full_topk(teacher_rows: torch.Tensor) -> tuple[TeacherRows, TeacherRows]:
    ids, logprobs = topk_logprobs(teacher_rows, teacher_rows.shape[-1], dtype=torch.float64)
    return TeacherRows(logits=teacher_rows), TeacherRows(ids, logprobs)


def row_view(student, teacher, labels):
    mask = labels != -100
    sequence = mask.nonzero()[:, 0]
    return student[mask], teacher[mask], labels[mask], sequence


def test_hybrid_trains_through_release_loss_online_and_at_k_equal_v() -> None:
    student, teacher, labels = batch(7)
    labels[1, 3] = 4  # no gaps: the harness's rows of a sequence are consecutive positions
    _, teacher_rows, targets, sequence = row_view(student, teacher, labels)
    online, topk = online_and_full_topk(teacher_rows)
    for signal in (online, topk):
        signal.sequence, signal.rows_per_sequence = sequence, targets.numel() / sequence.unique().numel()
    for phi, div in CASES:
        if phi == "random_label":
            continue
        method = load_method("hybrid", weighting=phi, divergence=div)
        want = release_loss(phi, student, teacher, labels, progress=0.3, div=div)
        by_signal = []
        for signal in (online, topk):
            loss = method.token_losses(student[labels != -100], targets, signal, 0.3)["loss"].mean()
            by_signal.append(torch.autograd.grad(loss, student)[0])
            assert loss.item() == pytest.approx(want.item(), rel=1e-9), (phi, div)
        assert torch.allclose(*by_signal, rtol=1e-8, atol=1e-12), (phi, div)
        assert torch.allclose(by_signal[0], torch.autograd.grad(want, student)[0], rtol=1e-8, atol=1e-12)


def test_hybrid_gkd_method_is_the_release_hybrid_gkd_loss() -> None:
    student, teacher, labels = batch(8)
    logits, teacher_rows, targets, _ = row_view(student, teacher, labels)
    method = load_method("hybrid-gkd")
    assert (method.params.lmbda, method.params.lambda_fkl, method.params.lambda_sft) == (0.2, 0.1, 0.9)
    got = method.token_losses(logits, targets, TeacherRows(logits=teacher_rows), 0.0)["loss"].mean()
    assert got.item() == pytest.approx(release_loss("hybrid_gkd", student, teacher, labels).item(), rel=1e-10)


def test_random_label_redraws_the_same_labels_for_the_same_chunk() -> None:
    student, teacher, labels = batch(9)
    logits, teacher_rows, targets, _ = row_view(student, teacher, labels)
    method = load_method("hybrid", weighting="random_label", distill_weight=0.0)
    first, again = (method.token_losses(logits, targets, TeacherRows(logits=teacher_rows), 0.4)["loss"] for _ in "12")
    assert torch.equal(first, again)
    other = method.token_losses(logits, targets, TeacherRows(logits=teacher_rows), 0.5)["loss"]
    assert not torch.equal(first, other)  # another step draws other labels
    cross_entropy = -logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0]
    assert not torch.allclose(first, cross_entropy)


def test_chi2_through_the_chunked_loop_equals_release_loss() -> None:
    from tests.tiny_training import synthetic_examples, tiny_student
    from trainers.batch import collate
    from trainers.loop import row_terms

    student = tiny_student()
    torch.manual_seed(3)
    teacher = tiny_student()
    for parameter in teacher.parameters():
        parameter.data.normal_()
    batch_ = collate(synthetic_examples(6), pad_id=0)
    labels = torch.full(batch_.input_ids.shape, -100)
    labels[batch_.positions[:, 0], batch_.positions[:, 1]] = batch_.targets
    method = load_method("hybrid", weighting="chi2", divergence="jsd")
    full = student(input_ids=batch_.input_ids, attention_mask=batch_.attention_mask).logits
    with torch.no_grad():
        teacher_logits = teacher(input_ids=batch_.input_ids, attention_mask=batch_.attention_mask).logits
    want = release_loss("chi2", full, teacher_logits, labels, progress=0.4, div="jsd")
    (want_grad,) = torch.autograd.grad(want, student.lm_head.weight)
    longest = int(torch.bincount(batch_.positions[:, 0]).max())
    for chunk_size in (3, longest, 10_000):  # shorter than a sequence, one sequence, everything
        got = row_terms(method, student, batch_, 0.4, chunk_size, teacher=teacher, diagnose=False)["loss"].mean()
        assert got.item() == pytest.approx(want.item(), rel=1e-5), chunk_size
        (grad,) = torch.autograd.grad(got, student.lm_head.weight)
        assert torch.allclose(grad, want_grad, rtol=1e-4, atol=1e-7), chunk_size
    method.whole_sequences = False  # fixed-size chunks cut sequences: the sequence-level terms then differ
    cut = row_terms(method, student, batch_, 0.4, 3, teacher=teacher, diagnose=False)["loss"].mean()
    assert abs(cut.item() - want.item()) > 1e-4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, t, y: release_loss("magic", s, t, y), "unknown phi_type 'magic'"),
        (lambda s, t, y: release_loss("sft", s, t, y, div="fkl"), "unknown div 'fkl'"),
        (lambda s, t, y: release_loss("sft", s, t, y, distill_weight=2.0), "'distill_weight'"),
        (lambda s, t, y: load_method("hybrid", weighting="confidence"), "unknown weighting"),
        (lambda s, t, y: load_method("hybrid", divergence="csd"), "unknown divergence"),
        (lambda s, t, y: load_method("hybrid", weighting="entropy_sft_sft", entropy_gamma=1.0), "entropy_gamma = 1"),
        (lambda s, t, y: load_method("hybrid", temperature_min=3.0, temperature_max=2.0), "temperature_max"),
    ],
)
def test_bad_input_is_a_one_line_error(call, message: str) -> None:
    student, teacher, labels = batch()
    with pytest.raises(HarnessError, match=message):
        call(student, teacher, labels)
