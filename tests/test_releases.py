"""Paper-named methods against their releases: each loss against a float64 transcription of the release's code
(zero on identical inputs, known values, gradients), each default against the release, the dld refusal."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from harness.pipeline import check_teacher_signal
from kdcore.errors import HarnessError
from tests.tiny_models import tiny_llama
from trainers.batch import collate
from trainers.divergences import token_divergence
from trainers.loop import row_terms, sequence_share
from trainers.objectives import METHODS, TeacherRows, load_method
from trainers.releases import RELEASES, source
from trainers.taid import Schedule, TAIDParams, taid_cross_entropy, taid_loss
from trainers.topk import topk_divergence, topk_logprobs

torch.set_num_threads(1)
F64 = torch.float64


def pair(rows: int = 5, vocab: int = 7, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(rows, vocab, generator=generator, dtype=F64) * 2,
        torch.randn(rows, vocab, generator=generator, dtype=F64) * 2,
    )


def grad_of(fn, z: Tensor) -> Tensor:
    z = z.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(z).sum(), z)
    return grad


# --- transcriptions of the releases' losses, per token (no masking: every row is a label token) -------------


def js_distance(s: Tensor, t: Tensor, lam: float = 0.9) -> Tensor:
    """DistiLLM distillm/losses.py js_distance: lam KL(Q || M) + (1 - lam) KL(P || M), M = (1 - lam) P + lam Q."""
    p, q = t.softmax(-1), s.softmax(-1)
    log_m = ((1 - lam) * p + lam * q).log()
    return lam * (q * (s.log_softmax(-1) - log_m)).sum(-1) + (1 - lam) * (p * (t.log_softmax(-1) - log_m)).sum(-1)


def skewed_reverse_kl(s: Tensor, t: Tensor, lam: float = 0.1) -> Tensor:
    """DistiLLM skewed_reverse_kl: sum q (log q - log((1 - lam) P + lam Q))."""
    p, q = t.softmax(-1), s.softmax(-1)
    return (q * (s.log_softmax(-1) - ((1 - lam) * p + lam * q).log())).sum(-1)


def skewed_forward_kl(s: Tensor, t: Tensor, lam: float = 0.1) -> Tensor:
    """DistiLLM skewed_forward_kl: -sum p log(lam P + (1 - lam) Q) (a cross-entropy: KL + H(P))."""
    p, q = t.softmax(-1), s.softmax(-1)
    return -(p * (lam * p + (1 - lam) * q).log()).sum(-1)


def csd_ts_surrogate(s: Tensor, t: Tensor) -> Tensor:
    """CSD ddp_csd.py CSD_TS per row: a surrogate whose gradient in s is the release's (its value means nothing)."""
    p, q, d = t.softmax(-1), s.softmax(-1), s - t
    first = (d - (p * d).sum(-1, keepdim=True)).detach() * q.detach() * s
    second = (d - (q * d).sum(-1, keepdim=True)).detach() * p.detach() * s
    return ((first + second) / 2).sum(-1)


def dld_uniform_raw(s: Tensor, t: Tensor) -> Tensor:
    """CSD losses.py dld_ablation(w="U", normalize="no"): sum (1/V) (z_S - z_T)^2 / 4."""
    return ((s - t) ** 2 / s.shape[-1] / 4).sum(-1)


# --- jsd-skew and distillm ----------------------------------------------------------------------------------


def test_jsd_skew_defaults_to_distillm_js_distance() -> None:
    s, t = pair()
    assert torch.allclose(token_divergence("jsd-skew", s, t), js_distance(s, t), rtol=1e-12)  # lam 0.9 by default
    assert torch.allclose(
        grad_of(lambda z: token_divergence("jsd-skew", z, t), s), grad_of(lambda z: js_distance(z, t), s)
    )
    assert token_divergence("jsd-skew", s, s).abs().max() == 0
    assert torch.autograd.gradcheck(lambda z: token_divergence("jsd-skew", z, t), (s.clone().requires_grad_(True),))


def test_distillm_is_the_skew_reverse_kl_at_0_1_and_sfkl_its_forward_twin() -> None:
    s, t = pair()
    targets = torch.zeros(len(s), dtype=torch.long)
    method = load_method("distillm")
    assert (method.params.divergence, method.params.skew) == ("srkl", 0.1)
    loss = method.token_losses(s, targets, TeacherRows(logits=t), 0.0)["loss"]
    assert torch.allclose(loss, skewed_reverse_kl(s, t), rtol=1e-12)
    forward = load_method("distillm", divergence="sfkl")
    value = lambda z: forward.token_losses(z, targets, TeacherRows(logits=t), 0.0)["loss"]  # noqa: E731
    entropy = -(t.softmax(-1) * t.log_softmax(-1)).sum(-1)
    assert torch.allclose(value(s), skewed_forward_kl(s, t) - entropy, rtol=1e-10)  # ours is zero at P == Q
    assert torch.allclose(grad_of(value, s), grad_of(lambda z: skewed_forward_kl(z, t), s), rtol=1e-10)
    assert method.token_losses(s, targets, TeacherRows(logits=s), 0.0)["loss"].abs().max() == 0
    # a known small value: P = (0.5, 0.5), Q = (1, 0) - s.t. M = 0.9 P + 0.1 Q = (0.55, 0.45); KL(Q || M) = log(1/0.55)
    small_s, small_t = torch.tensor([[30.0, -30.0]], dtype=F64), torch.zeros(1, 2, dtype=F64)
    small = method.token_losses(small_s, targets[:1], TeacherRows(logits=small_t), 0.0)["loss"]
    assert small.item() == pytest.approx(math.log(1 / 0.55), rel=1e-9)


# --- csd: weights and reduction --------------------------------------------------------------------------------


def test_csd_defaults_to_the_task_specific_releases_teacher_student_gradient() -> None:
    s, t = pair()
    method = load_method("csd")
    targets = torch.zeros(len(s), dtype=torch.long)
    value = lambda z: method.token_losses(z, targets, TeacherRows(logits=t), 0.0)["loss"]  # noqa: E731
    assert torch.allclose(grad_of(value, s), grad_of(lambda z: csd_ts_surrogate(z, t), s), rtol=1e-10, atol=1e-13)
    assert method.token_losses(s, targets, TeacherRows(logits=s + 3.0), 0.0)["loss"].abs().max() < 1e-12  # shift
    ids, logprobs = topk_logprobs(t, t.shape[-1], dtype=F64)  # k = V: the cached value is the online one
    cached = lambda z: method.token_losses(z, targets, TeacherRows(ids, logprobs), 0.0)["loss"]  # noqa: E731
    assert torch.allclose(grad_of(cached, s), grad_of(value, s), rtol=1e-8, atol=1e-10)
    assert method.reduction == "sequence"


def test_sequence_share_turns_the_row_mean_into_the_mean_of_each_sequences_mean() -> None:
    sequence = torch.tensor([0, 1, 1, 1, 3, 3])  # lengths 1, 3, 2 (index 2 absent)
    losses = torch.tensor([6.0, 1.0, 2.0, 3.0, 4.0, 8.0], dtype=F64)
    expected = (6.0 + 2.0 + 6.0) / 3  # the release: each prompt's token mean, / len(prompts)
    assert (losses * sequence_share(sequence)).mean().item() == pytest.approx(expected, rel=1e-12)


def test_csd_through_the_loop_matches_the_release_per_prompt_mean_in_gradient() -> None:
    student, teacher = tiny_llama(13, seed=0).to(F64), tiny_llama(13, seed=1).to(F64)
    examples = [
        {"prompt_ids": [1, 2], "completion_ids": [3]},
        {"prompt_ids": [4], "completion_ids": [5, 6, 7, 8]},
    ]
    batch = collate(examples, pad_id=0)
    terms = row_terms(load_method("csd"), student, batch, 0.0, chunk_size=2, teacher=teacher)  # chunks split rows
    ours = [g.clone() for g in torch.autograd.grad(terms["loss"].mean(), list(student.parameters()))]
    student_logits = student(batch.input_ids, attention_mask=batch.attention_mask).logits
    with torch.no_grad():
        teacher_logits = teacher(batch.input_ids, attention_mask=batch.attention_mask).logits
    release = 0.0
    for b in range(len(examples)):  # one prompt at a time: its token mean, / len(prompts)
        rows = batch.positions[batch.positions[:, 0] == b]
        per_token = csd_ts_surrogate(student_logits[b, rows[:, 1]], teacher_logits[b, rows[:, 1]])
        release = release + per_token.mean() / len(examples)
    theirs = torch.autograd.grad(release, list(student.parameters()))
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


# --- dld: raw logits, online only -------------------------------------------------------------------------------


def test_dld_is_raw_logit_mse_over_the_vocabulary_online() -> None:
    s, t = pair()
    method = load_method("dld")
    targets = torch.zeros(len(s), dtype=torch.long)
    value = method.token_losses(s, targets, TeacherRows(logits=t + 5.0), 0.0)["loss"]  # a shift is not invisible
    assert torch.allclose(value, dld_uniform_raw(s, t + 5.0), rtol=1e-12)
    assert method.token_losses(s, targets, TeacherRows(logits=s), 0.0)["loss"].abs().max() == 0
    assert method.data_plan().teacher_signal == "online" and method.data_plan(None).needs_teacher_model


@pytest.mark.parametrize(
    "refused",
    [
        lambda: load_method("dld").data_plan("topk"),
        lambda: check_teacher_signal("topk", load_method("dld")),
        lambda: check_teacher_signal("topk", load_method("soft", divergence="dld")),
        lambda: topk_divergence("dld", torch.zeros(1, 4), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3)),
    ],
)
def test_dld_on_the_top_k_cache_is_a_one_line_error(refused) -> None:
    with pytest.raises(HarnessError) as error:
        refused()
    assert "raw logits" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("method", [["--method", "dld"], ["--method", "soft", "--div", "dld"]])
def test_dld_with_teacher_signal_topk_stops_before_any_model_loads(method, tmp_path: Path, monkeypatch, capsys):
    import harness.models
    from harness.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(harness.models, "load_model", no_model)
    monkeypatch.setattr(harness.models, "resolve", no_model)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    args = ["harness", "run", *method, "--teacher-signal", "topk", "--results-dir", str(tmp_path / "results")]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as done:
        main()
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert done.value.code == 2
    assert "raw logits" in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


# --- TAID -------------------------------------------------------------------------------------------------------


def release_taid_schedule(losses: list[float], steps: int, adaptive: bool = True) -> list[float]:
    """SakanaAI/TAID taid.py: the t each step trains with, update_t called after each step's loss."""
    t_start, t_end, alpha, beta = 0.4, 1.0, 5e-4, 0.99
    t, prev, momentum, used = t_start, math.inf, 0.0, []
    for step, loss in enumerate(losses):
        used.append(t)
        if math.isinf(prev):
            prev = loss
            continue
        momentum = beta * momentum + (1 - beta) * (prev - loss) / (prev + 1e-15)
        target = t_start + (t_end - t_start) * step / steps
        delta = alpha * (1 / (1 + math.exp(-momentum))) * (1 - t)
        t = min(t_end, max(target, t + delta)) if adaptive else target
        prev = loss
    return used


@pytest.mark.parametrize("adaptive", [True, False])
def test_taid_schedule_is_the_releases(adaptive: bool) -> None:
    steps = 6
    losses = [3.0, 2.0, 2.5, 1.0, 0.9, 0.95]
    schedule = Schedule(TAIDParams(adaptive=adaptive))
    used = []
    for step, loss in enumerate(losses):
        used.append(schedule.at(step / steps))
        schedule.record(torch.tensor([loss - 0.5, loss + 0.5]))  # the step's mean is `loss`
        assert schedule.at(step / steps) == used[-1]  # chunks and the backward's recompute share t
    assert used == pytest.approx(release_taid_schedule(losses, steps, adaptive), rel=1e-12)


def test_taid_defaults_and_its_schedule_loss_are_the_releases() -> None:
    params = load_method("taid").params
    assert (params.t_start, params.t_end, params.alpha, params.beta, params.adaptive) == (0.4, 1.0, 5e-4, 0.99, True)
    s, t = pair()
    student, teacher = s.log_softmax(-1), t.log_softmax(-1)
    target = (0.7 * s + 0.3 * t).softmax(-1)
    release = -(target * student).sum(-1)  # fkl.forward_kl with teacher_probs = p_t: a cross-entropy
    assert torch.allclose(taid_cross_entropy(student, teacher, 0.3), release, rtol=1e-12)
    entropy = -(target * target.log()).sum(-1)
    assert torch.allclose(taid_loss(student, teacher, 0.3), release - entropy, rtol=1e-10)
    assert taid_loss(student, student, 0.3).abs().max() < 1e-15


# --- GKD as TRL ------------------------------------------------------------------------------------------------


def test_gkd_defaults_are_trls_gkdconfig() -> None:
    gkd = pytest.importorskip("trl.experimental.gkd")
    trl = {f.name: f.default for f in dataclasses.fields(gkd.GKDConfig)}
    params = load_method("gkd").params
    assert {k: getattr(params, k) for k in ("beta", "lmbda", "temperature", "seq_kd")} == {
        k: trl[k] for k in ("beta", "lmbda", "temperature", "seq_kd")
    }
    assert load_method("gkd").data_plan().completions == "reference"  # seq_kd = False: the data set's
    assert load_method("gkd", seq_kd=True).data_plan().completions == "teacher"


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_gkd_loss_is_trls_generalized_jsd(beta: float) -> None:
    gkd = pytest.importorskip("trl.experimental.gkd")
    s, t = pair()
    method = load_method("gkd", beta=beta)
    value = lambda z: method.token_losses(z, None, TeacherRows(logits=t), 0.0)["loss"]  # noqa: E731

    def trl(z: Tensor) -> Tensor:
        return gkd.GKDTrainer.generalized_jsd_loss(z[None], t[None], beta=beta, reduction="none")[0].sum(-1)

    assert torch.allclose(value(s), trl(s), rtol=1e-10, atol=1e-14)
    assert torch.allclose(grad_of(value, s), grad_of(trl, s), rtol=1e-9, atol=1e-13)
    assert value(t).abs().max() < 1e-14


# --- DistiLLM-2 -------------------------------------------------------------------------------------------------


def release_distillm2(chosen: tuple[Tensor, Tensor], rejected: tuple[Tensor, Tensor]) -> Tensor:
    """jongwooko/distillm-2 get_batch_logps (distillm_v2, fixed alphas 0.1) + kd_loss (beta 1) + losses.mean(), for
    one pair per batch row: chosen = (student logits, teacher logits) [T, V] of the teacher's response."""
    losses = []
    for (s_c, t_c), (s_r, t_r) in zip([chosen], [rejected], strict=True):
        q, p = s_c.log_softmax(-1), t_c.log_softmax(-1)
        mix = torch.logsumexp(torch.stack([math.log(0.1) + p, math.log(0.9) + q]), 0)
        chosen_kl = (p.exp() * (p - mix)).sum(-1).mean()
        q, p = s_r.log_softmax(-1), t_r.log_softmax(-1)
        mix = torch.logsumexp(torch.stack([math.log(0.9) + p, math.log(0.1) + q.detach()]), 0)
        rejected_kl = (q.exp() * (q - mix)).sum(-1).mean()
        losses.append((2 - 1.0) * chosen_kl + 1.0 * rejected_kl)
    return torch.stack(losses).mean()


def test_distillm2_matches_the_release_per_pair_loss_and_gradient() -> None:
    s, t = pair(rows=5)  # rows 0-1: the teacher's response, rows 2-4: the student's
    flags = torch.tensor([False, False, True, True, True])
    method = load_method("distillm2")
    assert method.reduction == "sequence"
    share = sequence_share(torch.tensor([0, 0, 1, 1, 1]))

    def ours(z: Tensor) -> Tensor:
        rows = TeacherRows(logits=t, row_values={"from_student": flags})
        return (method.token_losses(z, torch.zeros(5, dtype=torch.long), rows, 0.0)["loss"] * share).mean()

    def theirs(z: Tensor) -> Tensor:
        return release_distillm2((z[:2], t[:2]), (z[2:], t[2:]))

    assert ours(s).item() == pytest.approx(theirs(s).item(), rel=1e-12)
    assert torch.allclose(grad_of(ours, s), grad_of(theirs, s), rtol=1e-10, atol=1e-13)
    assert ours(t).abs().item() < 1e-14


def test_distillm2_defaults_and_response_sampling_are_the_releases() -> None:
    params = load_method("distillm2").params
    assert (params.skew_teacher, params.skew_student, params.adaptive, params.beta) == (0.1, 0.1, False, 1.0)
    (source,) = load_method("distillm2").data_plan().sources
    sampling = source.sampling
    assert (sampling.temperature, sampling.top_p, sampling.seed) == (0.8, 0.95, 42)


def test_distillm2_adaptive_skew_is_per_sequence() -> None:
    from trainers.distillm2 import distillm2_terms

    s, t = pair(rows=3)
    student, teacher = s.log_softmax(-1), t.log_softmax(-1)
    flags = torch.tensor([False, False, False])
    # rows 0-1 one sequence, row 2 another: each row carries its sequence's mean target log-probs (student, teacher)
    sequence = torch.tensor([[-1.0, -0.5], [-1.0, -0.5], [-2.0, -0.2]], dtype=F64)
    params = load_method("distillm2", adaptive=True).params
    out = distillm2_terms(student, teacher, sequence, flags, params)
    gap = sequence[:, 1].exp() - sequence[:, 0].exp()  # exp(mean log p) - exp(mean log q), per sequence
    a1 = (1 - 0.9 * gap.mean() / (gap + 1e-5)).clamp(0.01, 0.1)
    mix = torch.logaddexp(a1[:, None].log() + teacher, (1 - a1[:, None]).log() + student)
    assert torch.allclose(out, (teacher.exp() * (teacher - mix)).sum(-1), rtol=1e-12)
    assert out[0] == out[0] and a1[0] == a1[1]  # the same skew along a sequence


def test_student_responses_are_sampled_with_the_methods_settings(tmp_path: Path, monkeypatch) -> None:
    from harness.pairs import get_pair
    from harness.supervise import load_or_build_source

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    calls = []

    class Recorder:
        devices, backend = 1, "fake"

        def generate_ids(self, prompts, sampling):
            calls.append(sampling)
            return [[9] for _ in prompts]

    (source,) = load_method("distillm2").data_plan().sources
    data, _ = load_or_build_source(get_pair("tiny"), source, "student", [[1, 2]], Recorder, 10, eos_id=9)
    assert data.with_format(None)["completion_ids"] == [[9]]
    (call,) = calls
    assert (call.temperature, call.top_p, call.seed) == (0.8, 0.95, 42 * 1_000_003)


# --- every recorded default ---------------------------------------------------------------------------------------


def test_every_recorded_default_is_the_parameters_source() -> None:
    checked = 0
    for method, release in RELEASES.items():
        for key in release.defaults:
            text = source(method, key)
            assert text.startswith(release.repo + "@") and all(len(c) == 40 for c in release.files.values())
            if method in METHODS:
                fields = {f.name: f for f in dataclasses.fields(METHODS[method].Params)}
                if key in fields:
                    assert fields[key].metadata["source"] == text
                    checked += 1
    assert checked >= 15


def test_harness_methods_prints_each_release(capsys, monkeypatch) -> None:
    from harness.cli import main

    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(sys, "argv", ["harness", "methods"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    for method, release in RELEASES.items():
        assert release.repo in out and all(c[:7] in out for c in release.files.values()), method
