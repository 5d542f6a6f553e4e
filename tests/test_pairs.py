"""The pairs file: all shipped pairs load, and each kind of bad entry gives a one-line error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.pairs import ARCHITECTURES, get_pair, load_pairs
from kdcore.errors import HarnessError

REAL_PAIRS = {"qwen", "qwen3", "llama", "llama-3b", "gemma", "deepseek", "deepseek-coder"}


def test_shipped_pairs_load() -> None:
    pairs = load_pairs()
    assert REAL_PAIRS | {"tiny"} == set(pairs)
    assert pairs["qwen"].teacher == "Qwen/Qwen2.5-7B-Instruct"
    assert pairs["gemma"].architecture == "Gemma2ForCausalLM"
    assert pairs["qwen3"].chat_template_kwargs == {"enable_thinking": False}
    for pair in pairs.values():
        assert pair.architecture in ARCHITECTURES
        assert pair.tasks and pair.train_task


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pairs.toml"
    path.write_text("schema_version = 1\n" + body)
    return path


GOOD = (
    '[pairs.x]\nteacher = "a"\nstudent = "b"\narchitecture = "LlamaForCausalLM"\n'
    'tasks = ["arith"]\ntrain_task = "arith"\n'
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (GOOD.replace('teacher = "a"\n', ""), "missing field 'teacher'"),
        (GOOD + "colour = 1\n", "unknown field 'colour'"),
        (GOOD.replace("LlamaForCausalLM", "GPT9"), "unknown architecture"),
        (GOOD + 'dtype = "float8"\n', "unknown dtype"),
        (GOOD + "max_length = -3\n", "'max_length' must be a positive integer"),
        (GOOD.replace('["arith"]', "[]"), "'tasks' must be a non-empty"),
        ("[pairs.x\n", "malformed pairs file"),
    ],
)
def test_bad_entries_name_the_problem(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(HarnessError, match=message) as err:
        load_pairs(_write(tmp_path, body))
    assert "\n" not in str(err.value)


def test_unknown_pair_lists_choices() -> None:
    with pytest.raises(HarnessError, match=r"unknown pair 'nope'; valid choices: .*deepseek.*tiny"):
        get_pair("nope")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="pairs file not found"):
        load_pairs(tmp_path / "absent.toml")
