"""The device memory plan, proved on CPU: a spy model loader and a fake vLLM engine record what is resident when.

For each kind of method (sft; hard, soft and hybrid from the cache; soft with an online teacher; gkd, on-policy) a run
goes through the phases with the vLLM backend faked by `FakeEngine` (it generates with a private copy of the model,
which the loader spy does not count): no HF model the run loaded is alive (weak references, after gc) when an engine
starts, no engine is alive while training runs, and training holds the student, plus the teacher only when the
method's teacher signal is online. The transformers backend is checked the same way for the kinds that load models
in more than one phase (hybrid: the teacher that generated the supervision is gone before training starts).
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness import phases
from harness.models import load_tokenizer
from harness.pipeline import RunSpec, run
from harness.spec import Execution
from harness.supervise import teacher_topk
from tasks import vllm_backend
from tasks.transformers_backend import TransformersGenerator

PAIRS = """schema_version = 1

[pairs.tiny]
teacher = "builtin:tiny/teacher"
student = "builtin:tiny/student"
architecture = "LlamaForCausalLM"
dtype = "float32"
max_length = 64
max_new_tokens = 8
tasks = ["arith"]
train_task = "arith"
train_prompts = 12
train = { max_steps = 2, batch_size = 4, lr = 1e-3 }

[pairs.tiny.supervision]  # the miniature teacher never ends at EOS: keep its budget-hit traces
drop_truncated = false
"""


class Spy:
    """The events of one run: HF models loaded (kept as weak references), engines started and closed, training."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.models: list[tuple[str, weakref.ref]] = []
        self.engines: list[weakref.ref] = []

    def alive_models(self) -> list[str]:
        gc.collect()
        return sorted(role for role, ref in self.models if ref() is not None)

    def alive_engines(self) -> int:
        gc.collect()
        return sum(ref() is not None and ref().open for ref in self.engines)


def role(path: str) -> str:
    return "trained" if "/models/" in path else Path(path).name


@pytest.fixture
def spy(own_tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Spy:
    """Loader, engine and training spies, in a cache of this test's own (sharing the session's tiny pair)."""
    spy = Spy()
    real_load, real_train = phases.load_model, phases.train

    def load_model(ref, *args, **kwargs):
        model, tokenizer = real_load(ref, *args, **kwargs)
        spy.events.append(("load", role(ref)))
        spy.models.append((role(ref), weakref.ref(model)))
        return model, tokenizer

    def train(*args, **kwargs):
        assert spy.alive_engines() == 0, "an engine is alive while training runs"
        spy.events.append(("train", *spy.alive_models()))
        return real_train(*args, **kwargs)

    class Engine(FakeEngine):
        def __init__(self, path: str, **kwargs) -> None:
            assert spy.alive_models() == [], f"HF models alive as an engine starts: {spy.alive_models()}"
            super().__init__(path, **kwargs)
            spy.events.append(("engine", role(path)))
            spy.engines.append(weakref.ref(self))

        def close(self) -> None:
            spy.events.append(("close", role(self.path)))
            super().close()

    monkeypatch.setattr(phases, "load_model", load_model)
    monkeypatch.setattr(phases, "train", train)
    monkeypatch.setattr(vllm_backend, "VLLMGenerator", Engine)
    return spy


class FakeEngine:
    """Stands in for `tasks.vllm_backend.VLLMGenerator`: the same interface, generating with its own model copy."""

    def __init__(self, path: str, *, vocab_rows: int | None = None, **kwargs) -> None:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        self.inner = TransformersGenerator(model, load_tokenizer(path), vocab_rows=vocab_rows)
        self.path, self.open, self.devices, self.backend = path, True, 1, "vllm"

    def generate(self, prompts, sampling):
        return self.inner.generate(prompts, sampling)

    def generate_ids(self, prompt_ids, sampling):
        return self.inner.generate_ids(prompt_ids, sampling)

    def generate_topk(self, prompt_ids, sampling, *, k):
        completions = self.inner.generate_ids(prompt_ids, sampling)
        examples = [{"prompt_ids": p, "completion_ids": c or [0]} for p, c in zip(prompt_ids, completions, strict=True)]
        soft = teacher_topk(self.inner.model, examples, 0, k, 8, self.inner.vocab_rows)
        return [(c, ids, lp[:, :k]) for c, (ids, lp) in zip(completions, soft, strict=True)]

    def close(self) -> None:
        self.open = False
        self.inner = None


KINDS = {  # method, teacher signal, params -> what training holds
    "sft": ("sft", None, {}, ("student",)),
    "hard": ("hard", None, {}, ("student",)),
    "soft": ("soft", "topk", {}, ("student",)),
    "hybrid": ("hybrid", "topk", {}, ("student",)),
    "soft-online": ("soft", "online", {}, ("student", "teacher")),
    "gkd": ("gkd", "online", {"lmbda": 1.0}, ("student", "teacher")),
}


def run_kind(spy: Spy, tmp_path: Path, kind: str, backend: str):
    method, signal, params, _ = KINDS[kind]
    pairs_file = tmp_path / "pairs.toml"
    pairs_file.write_text(PAIRS)
    spec = RunSpec(
        pair="tiny",
        method=method,
        method_params=params,
        teacher_signal=signal,
        limit=3,
        pairs_file=pairs_file,
        execution=Execution(backend=backend, results_dir=tmp_path / "results"),
    )
    record, _ = run(spec)
    return record


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_of_engine_or_hf_models_is_resident_at_a_time(spy: Spy, tmp_path: Path, kind: str) -> None:
    record = run_kind(spy, tmp_path, kind, "vllm")
    held = KINDS[kind][3]
    # sft and gkd (TRL's seq_kd = False) train on the data set's reference answers: no supervision
    supervise = [("engine", "teacher"), ("close", "teacher")] if kind not in ("sft", "gkd") else []
    assert spy.events == [
        *supervise,
        *[("load", name) for name in held],
        ("train", *sorted(held)),
        ("engine", "trained"),  # the student's evaluation, as saved
        ("close", "trained"),
        ("engine", "teacher"),  # the teacher's evaluation (then cached)
        ("close", "teacher"),
        ("engine", "student"),  # the student's own, before distillation (then cached)
        ("close", "student"),
    ]
    assert spy.alive_models() == [] and spy.alive_engines() == 0
    costs = record.cost.phases
    references = ["evaluate_teacher", "evaluate_student_before"]
    assert list(costs) == [*(["supervise"] if supervise else []), "train", "evaluate", *references]
    backends = {name: cost.backend for name, cost in costs.items()}
    assert backends == {name: "accelerate" if name == "train" else "vllm" for name in costs}
    assert all(cost.peak_memory_bytes > 0 for cost in costs.values())
    if kind == "gkd":
        assert record.training.on_policy_batches == 2  # sampled with HF generate during training


def test_transformers_backend_frees_the_supervising_teacher_before_training(spy: Spy, tmp_path: Path) -> None:
    run_kind(spy, tmp_path, "hybrid", "transformers")
    assert spy.events == [
        ("load", "teacher"),  # generation + one forward for the top-k
        ("load", "student"),
        ("train", "student"),  # the teacher is gone
        ("load", "trained"),
        ("load", "teacher"),
        ("load", "student"),  # the student before distillation, evaluated as shipped
    ]
    assert spy.alive_models() == []
