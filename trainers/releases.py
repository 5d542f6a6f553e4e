"""Where each paper-named method comes from: its release (repository, commit, files), the place in it that sets
each default the harness takes, and where the harness still differs from it and why. `harness methods` prints
them; a parameter's `source` (trainers.params) is `source(method, parameter)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Release:
    """A method's public code: `files` maps each file read to the commit it was read at; `defaults` maps a
    parameter to (file, the function, option or line that sets it); `differences` says what the harness does
    otherwise."""

    paper: str
    repo: str
    files: dict[str, str]
    defaults: dict[str, tuple[str, str]] = field(default_factory=dict)
    differences: tuple[str, ...] = ()


CSD_TASK = "5688c51cdc222789f5676ee590fdff7fd165e7cd"
CSD_AGNOSTIC = "c77a3a7d177e954390b164986ed8d5bd11acedcf"
DISTILLM = "d47e77ff9d27721783b32213be38c1204230cc0a"
DISTILLM2 = "fe4cf9bfbb4f83219dd1d69219800164b59685fa"
TAID = "a0628922c16169d1fca10ddf61849e0693289cf8"
TRL = "f2cd57710ae345ea6428ae95363267fcf38a3dc8"

CSD_TS = "task_specific_distillation/train/ddp_csd.py"
CSD_LOSSES = "task_agnostic_distillation/csd/losses.py"
DISTILLM_LOSSES = "distillm/losses.py"
DISTILLM_SCRIPT = "scripts/opt/distillm/train_1.3B_2.7B.sh"
DISTILLM2_TRAINER = "src/distillm_trainer.py"
DISTILLM2_GENERATE = "generate/generate_vllm.py"
TAID_LOSS = "src/distil_losses/taid.py"
GKD_CONFIG = "trl/experimental/gkd/gkd_config.py"
GKD_TRAINER = "trl/experimental/gkd/gkd_trainer.py"

RELEASES: dict[str, Release] = {
    "csd": Release(
        "Kim et al. 2025, Distillation of LLMs via Concrete Score Matching (arXiv 2509.25837)",
        "aailab-kaist/CSD",
        {
            CSD_TS: CSD_TASK,
            "task_specific_distillation/config/csd_distill/kd_train_gsm.yaml": CSD_TASK,
            CSD_LOSSES: CSD_AGNOSTIC,
        },
        {
            "divergence": (CSD_TS, "CSD_TS (distance_metric: csd_ts in every config/csd_distill/*.yaml)"),
            "reduction": (CSD_TS, "mean over a prompt's tokens, loss / len(prompts) over grad_acc_size prompts"),
        },
        (
            "trains on the teacher's completions (the supervision cache); the release's supervised_kd trains on the "
            "data set's reference responses",
            "soft labels from the top-k cache by default (k ids + tail bucket, see trainers.divergences); the "
            "release runs the teacher online (--teacher-signal online)",
            "no coding config in the release: coding pairs use csd_ts, the choice of all three task-specific configs",
        ),
    ),
    "dld": Release(
        "direct logit distillation, as the CSD paper's baseline (arXiv 2509.25837)",
        "aailab-kaist/CSD",
        {CSD_LOSSES: CSD_AGNOSTIC},
        {
            "divergence": (CSD_LOSSES, 'dld_ablation(w="U", normalize="no"): uniform weights, raw logits, / 4'),
        },
        ("online teacher only: the top-k cache stores log-probs of k tokens, not the raw logits of the vocabulary",),
    ),
    "distillm": Release(
        "Ko et al. 2024, DistiLLM (ICML 2024, arXiv 2402.03898)",
        "jongwooko/distillm",
        {DISTILLM_LOSSES: DISTILLM, "finetune.py": DISTILLM, "arguments.py": DISTILLM, DISTILLM_SCRIPT: DISTILLM},
        {
            "divergence": (DISTILLM_SCRIPT, "--type adaptive-srkl, as in 5 of the 7 scripts/*/distillm/*.sh"),
            "skew": ("arguments.py", "--skew-alpha default 0.1, passed as lam to skewed_reverse_kl"),
            "reduction": (DISTILLM_LOSSES, "skewed_reverse_kl: mean over the batch's label tokens"),
            "kd_ratio": (DISTILLM_SCRIPT, "--kd-ratio 1.0: the distillation loss alone"),
        },
        (
            "no adaptive off-policy student generation (its replay buffer and the sampling threshold raised from "
            "the dev loss each epoch; at the scripts' --init-threshold 0.0 it starts off)",
            "trains on the teacher's completions; the release on the data set's responses",
        ),
    ),
    "jsd-skew": Release(
        "Ko et al. 2024, DistiLLM: js_distance",
        "jongwooko/distillm",
        {DISTILLM_LOSSES: DISTILLM, "finetune.py": DISTILLM},
        {"lam": (DISTILLM_LOSSES, "js_distance(..., lam=0.9); finetune.py get_distil_loss calls it without lam")},
    ),
    "distillm2": Release(
        "Ko et al. 2025, DistiLLM-2 (ICML 2025, arXiv 2503.07067)",
        "jongwooko/distillm-2",
        {DISTILLM2_TRAINER: DISTILLM2, DISTILLM2_GENERATE: DISTILLM2, "README.md": DISTILLM2},
        {
            "skew_teacher": (DISTILLM2_TRAINER, "self.base_alpha_1 = 0.1"),
            "skew_student": (DISTILLM2_TRAINER, "self.base_alpha_2 = 0.1"),
            "adaptive": (
                DISTILLM2_TRAINER,
                "self.update_alpha = False: logp_logq stays None, so get_batch_logps falls back to the fixed skews",
            ),
            "beta": (DISTILLM2_TRAINER, "kd_loss distillm_v2: beta = 1.0 (gradual_beta = False)"),
            "student_temperature": (DISTILLM2_GENERATE, "--temperature default 0.8"),
            "student_top_p": (DISTILLM2_GENERATE, "--top_p default 0.95"),
            "student_seed": (DISTILLM2_GENERATE, "--seed default 42"),
            "reduction": (
                DISTILLM2_TRAINER,
                "get_batch_logps(average_log_prob=True): each sequence's token mean; losses.mean() over pairs",
            ),
        },
        (
            "the teacher's responses are the supervision cache's, sampled at the pair's supervision settings; the "
            "release samples them with the same script as the student's (0.8, top-p 0.95)",
            "adaptive = true (off in the release, which cannot reach it) measures the gap per sequence as the "
            "release's code does, against the mean gap of the batch's sequences of the same kind, not a reference "
            "taken once; the skew is held fixed (no gradient)",
            "responses are cut at the pair's max_new_tokens; the release's max_tokens is 1024",
        ),
    ),
    "taid": Release(
        "Shing et al. 2025, TAID (ICLR 2025, arXiv 2501.16937)",
        "SakanaAI/TAID",
        {TAID_LOSS: TAID, "src/distil_losses/fkl.py": TAID, "src/arguments.py": TAID, "src/loss.py": TAID},
        {
            "t_start": (TAID_LOSS, "TAID(t_start=0.4); src/arguments.py --taid_t_start 0.4"),
            "t_end": (TAID_LOSS, "TAID(t_end=1.0); src/arguments.py --taid_t_end 1.0"),
            "alpha": (TAID_LOSS, "TAID(alpha=5e-4); src/arguments.py --taid_alpha 5e-4"),
            "beta": (TAID_LOSS, "TAID(beta=0.99); src/arguments.py --taid_beta 0.99"),
            "adaptive": (TAID_LOSS, "TAID(disable_adaptive=False)"),
            "schedule": (TAID_LOSS, "update_t after each loss: the first only sets prev_loss; t_target at global_step"),
            "reduction": ("src/distil_losses/fkl.py", "forward_kl: -sum p_t log q, mean over the batch's tokens"),
        },
        (
            "t is updated once per optimiser step from the step's mean loss; the release updates it at every "
            "forward, validation batches included (one per step at its accumulate_grad_batches 1)",
            "the schedule state (t, momentum, previous loss) is not checkpointed: a resumed run restarts t from the "
            "linear schedule at the resume point; under several processes each adapts t on its own share",
        ),
    ),
    "gkd": Release(
        "Agarwal et al. 2024, On-Policy Distillation of Language Models (GKD, ICLR 2024), as TRL runs it",
        "huggingface/trl",
        {GKD_CONFIG: TRL, GKD_TRAINER: TRL},
        {
            "lmbda": (GKD_CONFIG, "lmbda = 0.5; training_step samples when random.random() <= lmbda"),
            "beta": (GKD_CONFIG, "beta = 0.5; generalized_jsd_loss: 0 is forward KL, 1 reverse KL"),
            "temperature": (GKD_CONFIG, "temperature = 0.9, for sampling only (the loss is at temperature 1)"),
            "seq_kd": (GKD_CONFIG, "seq_kd = False: off-policy batches are the data set's completions"),
            "top_p": (GKD_TRAINER, "generation_kwargs top_k = 0, top_p = 1.0"),
            "reduction": (GKD_TRAINER, "generalized_jsd_loss: sum over label tokens / their number"),
        },
        (
            "max_new_tokens defaults to the pair's budget (TRL's default is 128) so on-policy samples are as long "
            "as the evaluated answers",
            "seq_kd = true trains on the cached teacher completions (sampled once at the pair's supervision "
            "settings); TRL samples the teacher afresh each batch at temperature",
        ),
    ),
}


def short(commit: str) -> str:
    return commit[:7]


def source(method: str, parameter: str) -> str:
    """'repo@commit file: where' for the default of `parameter` of `method` (KeyError if it is not recorded)."""
    release = RELEASES[method]
    path, where = release.defaults[parameter]
    return f"{release.repo}@{short(release.files[path])} {path}: {where}"
