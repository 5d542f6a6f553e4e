"""Every real pair's code path, end to end, on tiny random models of the same architecture classes.

Each pair's teacher has more vocabulary rows than its student (as Qwen2.5-7B's 152064 vs 1.5B's 151936):
the pipeline must align them on the shared tokenizer ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.pairs import load_pairs
from harness.pipeline import RunSpec, run
from harness.spec import Execution
from tests.tiny_models import MODEL_TYPES, make_model_dir, tiny_tokenizer
from trainers.loop import logits_fn

REAL_ARCHITECTURES = sorted({p.architecture for p in load_pairs().values() if p.name != "tiny"})


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_every_real_pair_architecture_is_covered() -> None:
    assert set(REAL_ARCHITECTURES) <= set(MODEL_TYPES)


@pytest.mark.parametrize("architecture", REAL_ARCHITECTURES)
def test_pipeline_on_tiny_models(architecture: str, tokenizer, tmp_path: Path) -> None:
    teacher = make_model_dir(tmp_path / "teacher", architecture, tokenizer, extra_rows=64, hidden=48)
    student = make_model_dir(tmp_path / "student", architecture, tokenizer)
    pairs_file = tmp_path / "pairs.toml"
    pairs_file.write_text(
        "schema_version = 1\n[pairs.t]\n"
        f'teacher = "{teacher}"\nstudent = "{student}"\narchitecture = "{architecture}"\n'
        'dtype = "float32"\ntasks = ["arith"]\ntrain_task = "arith"\ntrain_prompts = 6\nmax_new_tokens = 6\n'
        "train = { max_steps = 2, batch_size = 3, lr = 1e-3 }\n"
        "[pairs.t.supervision]\ndrop_truncated = false\n"  # random teachers never emit EOS: keep their traces
    )
    spec = RunSpec(
        pair="t", method="hybrid", limit=3, pairs_file=pairs_file, execution=Execution(results_dir=tmp_path / "results")
    )
    record, path = run(spec)
    assert path.exists()
    assert record.scores["arith"].n == 3
    phases = record.cost.phases
    assert set(phases) == {"supervise", "train", "evaluate", "evaluate_teacher", "evaluate_student_before"}
    assert phases["train"].tokens > 0 and phases["train"].device_hours > 0
    assert phases["evaluate_teacher"].tokens > 0 and phases["evaluate_teacher"].device_hours > 0
    assert phases["supervise"].backend == phases["evaluate"].backend == "transformers"
    assert phases["train"].backend == "accelerate"
    assert (tmp_path / "results" / "models" / record.run_id / "config.json").exists()


def test_gemma2_soft_capping_applied(tokenizer, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(make_model_dir(tmp_path / "g", "Gemma2ForCausalLM", tokenizer))
    ids = torch.tensor([[5, 6, 7]])
    hidden = model.get_decoder()(input_ids=ids).last_hidden_state
    assert torch.allclose(logits_fn(model)(hidden), model(input_ids=ids).logits, atol=1e-5)
    assert logits_fn(model)(hidden * 1e4).abs().max() <= model.config.final_logit_softcapping
