"""Dry runs at the real shapes: the shipped model configs, their scaling, and every real pair's pipeline on
random-weight models at the real vocabulary sizes (harness/dryrun.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from harness import dryrun
from harness.cli import main
from harness.models import load_tokenizer
from harness.pairs import load_pairs

REAL_PAIRS = sorted(name for name, pair in load_pairs().items() if not pair.teacher.startswith("builtin:"))
REAL_MODELS = sorted(
    {getattr(p, role) for p in load_pairs().values() for role in ("teacher", "student")}
    - {
        "builtin:tiny/teacher",
        "builtin:tiny/student",
    }
)
# Parameter counts the model cards state (billions); a config that builds another size has a wrong fact.
CARD_SIZES = {
    "Qwen/Qwen2.5-7B-Instruct": 7.61,
    "Qwen/Qwen2.5-1.5B-Instruct": 1.54,
    "Qwen/Qwen3-8B": 8.2,
    "Qwen/Qwen3-1.7B": 1.7,
    "meta-llama/Llama-3.1-8B-Instruct": 8.03,
    "meta-llama/Llama-3.2-1B-Instruct": 1.24,
    "meta-llama/Llama-3.2-3B-Instruct": 3.21,
    "google/gemma-2-9b-it": 9.24,
    "google/gemma-2-2b-it": 2.61,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": 7.62,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": 1.78,
    "deepseek-ai/deepseek-coder-6.7b-instruct": 6.74,
    "deepseek-ai/deepseek-coder-1.3b-instruct": 1.35,
}
REAL_ROWS = {"qwen": (152064, 151936), "deepseek": (152064, 151936), "qwen3": (151936, 151936)}
REAL_ROWS |= {"llama": (128256, 128256), "llama-3b": (128256, 128256), "gemma": (256000, 256000)}
REAL_ROWS |= {"deepseek-coder": (32256, 32256)}
# pairs whose dry run uses the real tokenizer: its family, its size, how its generation prompt ends
REAL_TOKENIZERS = {
    "qwen": ("qwen2.5", 151665, "<|im_start|>assistant\n"),
    "qwen3": ("qwen3", 151669, "<|im_start|>assistant\n"),
    "deepseek": ("deepseek-r1-distill-qwen", 151665, "<｜Assistant｜><think>\n"),
    "llama": ("llama-3.2", 128256, "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "llama-3b": ("llama-3.2", 128256, "<|start_header_id|>assistant<|end_header_id|>\n\n"),
}


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """The real pairs train in bf16 mixed precision; accelerate keeps one process-wide state and refuses another
    precision once set (as an earlier test in the same worker may have), so each test starts and ends clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def meta_model(config: dict) -> torch.nn.Module:
    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **values))


def test_every_real_model_has_a_sourced_config() -> None:
    assert set(REAL_MODELS) == set(CARD_SIZES)
    for hub_id in REAL_MODELS:
        facts = dryrun.model_facts(hub_id)
        assert facts["hub_id"] == hub_id and facts["source"].startswith("https://huggingface.co/")
        assert facts["config"]["vocab_size"] > 30000


@pytest.mark.parametrize("hub_id", sorted(CARD_SIZES))
def test_real_shape_has_the_model_cards_parameter_count(hub_id: str) -> None:
    config = dryrun.model_facts(hub_id)["config"]
    model = meta_model(config)  # no memory: parameters on the meta device
    assert type(model).__name__ == config["architectures"][0]
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    assert billions == pytest.approx(CARD_SIZES[hub_id], rel=0.03)


@pytest.mark.parametrize("pair", REAL_PAIRS)
def test_shipped_configs_match_the_pair(pair: str) -> None:
    entry = load_pairs()[pair]
    configs = [dryrun.model_facts(getattr(entry, role))["config"] for role in ("teacher", "student")]
    assert [c["architectures"][0] for c in configs] == [entry.architecture] * 2
    assert tuple(c["vocab_size"] for c in configs) == REAL_ROWS[pair]


@pytest.mark.parametrize("hub_id", sorted(CARD_SIZES))
@pytest.mark.parametrize("scale", [0.0, 0.25])
def test_scaling_keeps_heads_consistent_and_the_vocabulary(hub_id: str, scale: float) -> None:
    real = dryrun.model_facts(hub_id)["config"]
    small = dryrun.scaled_config(real, scale)
    assert small["vocab_size"] == real["vocab_size"]
    assert small["head_dim"] in dryrun.HEAD_DIMS and small["num_attention_heads"] >= 2
    assert small["num_attention_heads"] % small["num_key_value_heads"] == 0
    multi_head = real["num_key_value_heads"] == real["num_attention_heads"]
    assert (small["num_key_value_heads"] == small["num_attention_heads"]) == multi_head
    assert small["num_hidden_layers"] <= real["num_hidden_layers"] and small["hidden_size"] <= real["hidden_size"]
    if scale == 0.0:
        assert small["hidden_size"] == 64 and small["num_hidden_layers"] == 2
    for key in ("rope_scaling", "rope_theta", "final_logit_softcapping", "tie_word_embeddings", "rms_norm_eps"):
        assert small.get(key) == real.get(key)
    assert type(meta_model(small)).__name__ == real["architectures"][0]
    assert dryrun.scaled_config(real, 1.0) == real


def test_padded_tokenizer_covers_every_row() -> None:
    tokenizer = dryrun.padded_tokenizer(["Add 3 and 4.\n#### 7"], 32256)
    assert len(tokenizer) == 32256 == max(tokenizer.get_vocab().values()) + 1
    text = "Natalia sold 48/2 = 24 clips.\n#### 72"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.decode([32255]) == "<|fill32255|>"


@pytest.mark.slow
@pytest.mark.parametrize("pair", REAL_PAIRS)
def test_dry_run_of_every_real_pair(pair: str, tmp_path: Path) -> None:
    record, path = dryrun.dry_run(pair, backend="transformers", results_dir=tmp_path / "results")
    assert path.exists() and path.is_relative_to(tmp_path / "results")
    entry = load_pairs()[pair]
    assert record.pair == pair and set(record.scores) == set(entry.tasks)
    assert all(score.n == dryrun.Budget().limit for score in record.scores.values())
    assert {"supervise", "train", "evaluate"} <= set(record.cost.phases)
    assert record.training.steps == dryrun.Budget().max_steps
    models = Path(json.loads(path.read_text())["teacher"]).parent
    rows = tuple(
        json.loads((models / role / "config.json").read_text())["vocab_size"] for role in ("teacher", "student")
    )
    assert rows == REAL_ROWS[pair]
    tokenizer, recipe = load_tokenizer(str(models / "student")), dryrun.real_recipe(entry)
    built = json.loads((models / "built.json").read_text())["tokenizer"]
    if pair in REAL_TOKENIZERS:  # the real tokenizer, template and end ids
        assert built["family"] == recipe.family == REAL_TOKENIZERS[pair][0]
        assert len(tokenizer) == REAL_TOKENIZERS[pair][1] <= min(rows)
        generation = json.loads((models / "teacher" / "generation_config.json").read_text())
        assert generation["eos_token_id"] == list(recipe.end_ids)
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True
        )
        assert prompt.endswith(REAL_TOKENIZERS[pair][2])
    else:  # no packaged vocabulary: a tokenizer padded to the shared rows
        assert built == "padded" and len(tokenizer) == min(rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pair", "qwen", "--scale", "2"], "bad --scale '2'"),
        (["--pair", "tiny"], "no real shape"),
        (["--pair", "nope"], "unknown pair"),
        (["--pair", "qwen", "--results-dir", "results"], "not results"),
    ],
)
def test_dry_run_bad_input_is_one_line(args: list[str], message: str, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["harness", "dry-run", *args])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    out = capsys.readouterr().err
    assert message in out and len(out.strip().splitlines()) == 1


DRY_RUN_METHODS = {  # the methods whose training data or loss differ from hybrid's, through the CLI
    "distillm2": ["--method", "distillm2"],
    "taid-sekd": ["--method", "taid", "--param", "select_top=0.5"],
    "hybrid-chi2-akl": ["--method", "hybrid", "--param", "weighting=chi2", "--param", "divergence=akl"],
}


@pytest.mark.parametrize("run", sorted(DRY_RUN_METHODS))
def test_dry_run_of_the_methods_at_a_real_vocabulary(run: str, tmp_path: Path, monkeypatch, capsys) -> None:
    results = tmp_path / "results"
    argv = ["harness", "dry-run", "--pair", "deepseek-coder", "--backend", "transformers"]
    monkeypatch.setattr(sys, "argv", [*argv, "--results-dir", str(results), *DRY_RUN_METHODS[run]])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    (path,) = (results / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["method"] == DRY_RUN_METHODS[run][1] and record["training"]["steps"] == dryrun.Budget().max_steps
    if run == "distillm2":  # the initial student's responses are generated and charged as their own phase
        assert "student_responses" in record["cost"]["phases"]


def test_dry_run_checks_the_method_before_building_models(monkeypatch, capsys) -> None:
    monkeypatch.setattr(dryrun, "build_pair", lambda *a: pytest.fail("models were built"))
    monkeypatch.setattr(
        sys, "argv", ["harness", "dry-run", "--pair", "qwen", "--method", "hybrid", "--param", "distill_weight=7"]
    )
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    out = capsys.readouterr().err
    assert "distill_weight" in out and len(out.strip().splitlines()) == 1
