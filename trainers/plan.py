"""A method's data plan: what the run driver must prepare before training, so it never branches on method names.

Each objective returns one from `Objective.data_plan(teacher_signal)`; the driver (harness/) reads only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Completions = Literal["reference", "teacher"]
TeacherSignal = Literal["none", "topk", "online"]


@dataclass(frozen=True)
class ResponseSampling:
    """How the initial student samples its responses: temperature (0 = greedy), nucleus top_p, and the seed (the
    budget is the pair's `max_new_tokens`)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class DataPlan:
    """What a method trains on.

    completions: the completions of the training examples: the data set's reference answers, or the teacher's
        samples (the supervision cache, which also holds the top-k soft labels).
    teacher_signal: the teacher's distribution during training: none, top-k soft labels from the cache, or a
        teacher model resident beside the student (full logits, online).
    on_policy: the student's own samples replace some batches during training (needs the online teacher).
    student_responses: the initial student's own responses to the training prompts, generated once before
        training and cached like the teacher's supervision (DistiLLM-2's second data set).

    How the student's responses reach training: every training example (a row of the data set `trainers.loop.train`
    gets) then has one more field, `student_completion_ids`: the initial student's completion of that example's
    `prompt_ids` (its token ids, ending at EOS; `[eos]` when the student produced nothing), next to the example's own
    `completion_ids` (the teacher's or the reference's) and, from the supervision cache, `topk_ids`/`topk_logprobs`.
    The responses are sampled as `student_sampling` says (the method's settings; greedy by default), up to the
    pair's `max_new_tokens`, before training, by the pair's student as it is before any distillation, and cached under
    `$HARNESS_CACHE/student_responses/<key>` (key: the student's identity, the prompts, the settings); the run's
    record charges them as their own phase, `student_responses`. `trainers.batch.collate` ignores fields it does not
    know, so an objective that uses the responses reads them where it builds its batches.
    """

    completions: Completions = "teacher"
    teacher_signal: TeacherSignal = "none"
    on_policy: bool = False
    student_responses: bool = False
    student_sampling: ResponseSampling = field(default_factory=lambda: ResponseSampling())

    @property
    def needs_teacher_model(self) -> bool:
        """Whether the teacher's weights must be resident while the student trains."""
        return self.teacher_signal == "online"
