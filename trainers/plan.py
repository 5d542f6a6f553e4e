"""A method's data plan: what the run driver must prepare before training, so it never branches on method names.

Each objective returns one from `Objective.data_plan(teacher_signal)`; the driver (harness/) reads only this. A
method with a data flow of its own declares it here, in its plan, as a data source (`ModelResponses`, or a
`DataSource` subclass in the method's own module): the driver runs every source as its own phase, caches what it
generates, charges its cost, and adds its field to every training example, without knowing the method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from kdcore.errors import HarnessError
from tasks.protocol import Sampling

if TYPE_CHECKING:
    from tasks.generation import Generator

Completions = Literal["reference", "teacher"]
TeacherSignal = Literal["none", "topk", "online"]
ModelRole = Literal["teacher", "student"]
EXAMPLE_FIELDS = ("prompt_ids", "completion_ids", "topk_ids", "topk_logprobs")  # the driver's own fields


@dataclass(frozen=True)
class ResponseSampling:
    """How a model samples its responses: temperature (0 = greedy), nucleus top_p, and the seed (the budget is the
    pair's `max_new_tokens`)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class DataSource(ABC):
    """Data generated once before training by one of the pair's models (`model`: the teacher, or the student as it
    is before any distillation), one completion per training prompt, added to every training example as `example_field`
    (its token ids, ending at EOS; `[eos]` when the model produced nothing).

    The driver runs each source as a phase of its own named `name` (the record's cost phase and the cache folder
    `$HARNESS_CACHE/<name>/<key>`, key: the model's identity, the prompts, the pair's budget and `settings()`),
    in shards (`generate` is called once per shard, `shard` its index), on the generation backend the run uses.
    """

    model: ModelRole
    example_field: str

    @property
    def name(self) -> str:
        return f"{self.model}_responses"

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What, besides the model and the prompts, decides the completions (part of the cache key)."""

    @abstractmethod
    def generate(
        self, generator: Generator, prompts: list[list[int]], max_new_tokens: int, shard: int
    ) -> list[list[int]]:
        """The completions of `prompts` (shard `shard` of the training prompts), up to `max_new_tokens` tokens."""


@dataclass(frozen=True)
class ModelResponses(DataSource):
    """A model's own responses to the training prompts, sampled as `sampling` says (shard i from seed
    `sampling.seed * 1_000_003 + i`)."""

    sampling: ResponseSampling = field(default_factory=ResponseSampling)

    def settings(self) -> dict[str, Any]:
        return asdict(self.sampling)

    def generate(self, generator, prompts, max_new_tokens, shard):
        s = self.sampling
        drawn = Sampling(max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed * 1_000_003 + shard)
        return generator.generate_ids(prompts, drawn)


@dataclass(frozen=True)
class OnPolicy:
    """The student's own samples during training: with probability `lmbda` per micro-batch, its completions at
    `temperature` (up to `max_new_tokens`; None: the pair's budget) replace the batch's (needs the online teacher)."""

    lmbda: float
    temperature: float
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class DataPlan:
    """What a method trains on.

    completions: the completions of the training examples: the data set's reference answers, or the teacher's
        samples (the supervision cache, which also holds the top-k soft labels).
    teacher_signal: the teacher's distribution during training: none, top-k soft labels from the cache, or a
        teacher model resident beside the student (full logits, online).
    on_policy: the student's own samples replace some batches during training (None: never).
    sources: data generated before training, each a field of every training example (see DataSource).
    """

    completions: Completions = "teacher"
    teacher_signal: TeacherSignal = "none"
    on_policy: OnPolicy | None = None
    sources: tuple[DataSource, ...] = ()

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        fields = [s.example_field for s in self.sources]
        if len(set(names)) < len(names) or len(set(fields)) < len(fields):
            raise HarnessError(f"a data plan's sources need names and fields of their own: {names}, {fields}")
        if taken := sorted(set(fields) & set(EXAMPLE_FIELDS)):
            raise HarnessError(f"a data source cannot write the training examples' own field {taken[0]!r}")
        if self.on_policy is not None and self.teacher_signal != "online":
            raise HarnessError("an on-policy data plan needs the online teacher")

    @property
    def needs_teacher_model(self) -> bool:
        """Whether the teacher's weights must be resident while the student trains."""
        return self.teacher_signal == "online"
