"""The pairs file: all shipped pairs load, and each kind of bad entry gives a one-line error naming it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from harness.pairs import ARCHITECTURES, get_pair, load_pairs
from kdcore.errors import HarnessError
from tasks import load_task

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


def test_deepseek_protocol_follows_its_card_with_sources() -> None:
    pair = get_pair("deepseek")
    ev = pair.evaluation
    assert (ev.temperature, ev.top_p, ev.max_new_tokens, ev.thinking) == (0.6, 0.95, 32768, True)
    for name in ("temperature", "top_p", "max_new_tokens", "thinking", "samples"):
        assert ev.sources[name], name
    assert "32,768" in ev.sources["max_new_tokens"] and ev.sources["samples"].startswith("chosen")
    assert pair.supervision.thinking and pair.supervision.temperature == 0.6
    assert pair.max_new_tokens == pair.supervision.max_new_tokens == 16384
    assert pair.max_length > pair.max_new_tokens  # room for the prompt and the whole trace
    assert pair.task_options("math500") == {"thinking": True}


def test_every_real_pair_sources_its_non_default_settings() -> None:
    """A value that is not the default says where it comes from (a card, a report, or 'chosen: ...')."""
    import dataclasses

    from tasks.protocol import GenerationSettings

    defaults = GenerationSettings()
    for name in REAL_PAIRS:
        pair = get_pair(name)
        for settings in (pair.evaluation, pair.supervision):
            for field in dataclasses.fields(settings):
                if field.name != "sources" and getattr(settings, field.name) != getattr(defaults, field.name):
                    assert settings.sources.get(field.name), f"{name}: {field.name} has no source"
        assert pair.trace_filter.drop_truncated


def test_llama_budgets_and_shots_per_task() -> None:
    pair = get_pair("llama")
    gsm8k = load_task("gsm8k", **pair.task_options("gsm8k"))
    assert pair.evaluation.sampling(gsm8k).max_new_tokens == 1024
    assert pair.evaluation.sampling(load_task("math500")).max_new_tokens == 5120
    assert gsm8k.num_fewshot == 8 and pair.task_options("humaneval") == {}
    assert get_pair("qwen").evaluation.sampling(load_task("math500")).max_new_tokens == 1024  # the task's own


def test_coding_pair_distils_on_code() -> None:
    pair = get_pair("deepseek-coder")
    assert pair.train_task == "codealpaca" and pair.train_prompts == len(load_task("codealpaca").docs("train"))


def test_published_scores_parse() -> None:
    student = [p for p in get_pair("deepseek").published if p.model == "student"]
    assert [(p.task, p.score) for p in student] == [("math500", 0.839)]
    assert all(p.source and p.protocol for name in REAL_PAIRS for p in get_pair(name).published)


SETTINGS_ERRORS = [
    ("[pairs.x.evaluation]\ntemperature = -1\n", "evaluation: temperature must be a number >= 0"),
    ("[pairs.x.evaluation]\ntop_p = 1.5\n", "evaluation: top_p must be a number in (0, 1]"),
    ("[pairs.x.evaluation]\nsamples = 0\n", "evaluation: samples must be a positive integer"),
    ("[pairs.x.evaluation]\nsamples = 4\n", "samples = 4 with temperature 0 gives 4 equal completions"),
    ("[pairs.x.evaluation]\nbeams = 4\n", "evaluation: unknown setting 'beams'"),
    ("[pairs.x.evaluation]\nstop = 'x'\n", "evaluation: stop must be a list of strings"),
    ("[pairs.x.evaluation]\nshots = { gsm8k = -1 }\n", "evaluation: shots must be a table of task = integer >= 0"),
    ("[pairs.x.evaluation]\nsource.beams = 'card'\n", "source given for unknown field 'beams'"),
    ("[pairs.x.evaluation]\ndrop_truncated = true\n", "evaluation: unknown setting 'drop_truncated'"),
    ("[pairs.x.supervision]\ndrop_truncated = 1\n", "supervision.drop_truncated must be true or false"),
    (
        "max_new_tokens = 8\n[pairs.x.supervision]\nmax_new_tokens = 9\n",
        "max_new_tokens = 8 and supervision.max_new_tokens = 9 disagree",
    ),
    (
        "[[pairs.x.published]]\nmodel = 'judge'\ntask = 'arith'\nscore = 0.5\nsource = 's'\nprotocol = 'p'\n",
        "unknown model in",
    ),
    (
        "[[pairs.x.published]]\nmodel = 'student'\ntask = 'arith'\nscore = 83.9\nsource = 's'\nprotocol = 'p'\n",
        "score must be a fraction in [0, 1] (83.9% is 0.839)",
    ),
    (
        "[[pairs.x.published]]\nmodel = 'student'\ntask = 'arith'\nscore = 0.5\nsource = 's'\n",
        "missing field 'protocol'",
    ),
]


@pytest.mark.parametrize(("body", "message"), SETTINGS_ERRORS)
def test_bad_generation_settings_name_the_problem(tmp_path: Path, body: str, message: str) -> None:
    if body.startswith("max_new_tokens"):  # a plain field: before the sub-tables
        first, rest = body.split("\n", 1)
        text = GOOD + first + "\n" + rest
    else:
        text = GOOD + body
    with pytest.raises(HarnessError, match=re.escape(message)) as err:
        load_pairs(_write(tmp_path, text))
    assert "\n" not in str(err.value) and "pair 'x'" in str(err.value)


def test_a_pair_without_tables_gets_the_defaults(tmp_path: Path) -> None:
    (pair,) = load_pairs(_write(tmp_path, GOOD + "max_new_tokens = 24\n")).values()
    assert pair.evaluation.greedy and pair.evaluation.max_new_tokens is None
    assert pair.supervision.max_new_tokens == pair.max_new_tokens == 24
    assert pair.trace_filter.drop_truncated and not pair.trace_filter.require_correct and pair.published == ()


def test_require_correct_needs_a_scorable_train_task(tmp_path: Path) -> None:
    coding = GOOD.replace('train_task = "arith"', 'train_task = "codealpaca"')
    with pytest.raises(HarnessError, match="require_correct needs a train task with answers to check; 'codealpaca'"):
        load_pairs(_write(tmp_path, coding + "[pairs.x.supervision]\nrequire_correct = true\n"))
    (pair,) = load_pairs(_write(tmp_path, GOOD + "[pairs.x.supervision]\nrequire_correct = true\n")).values()
    assert pair.trace_filter.require_correct


BAD_TRAIN = [
    ("max_steps = -600", "train.max_steps -600: must be a positive integer"),
    ("max_steps = 0", "train.max_steps 0: must be a positive integer"),
    ('max_steps = "600"', "train.max_steps '600': must be a positive integer"),
    ("max_steps = 1.5", "train.max_steps 1.5: must be a positive integer"),
    ("max_steps = true", "train.max_steps True: must be a positive integer"),
    ("batch_size = 0", "train.batch_size 0: must be a positive integer"),
    ("gradient_accumulation_steps = -1", "train.gradient_accumulation_steps -1: must be a positive integer"),
    ("lr = nan", "train.lr nan: must be a positive number"),
    ("lr = -1e-3", "train.lr -0.001: must be a positive number"),
    ("lr = inf", "train.lr inf: must be a positive number"),
    ("weight_decay = -0.1", "train.weight_decay -0.1: must be a number >= 0"),
    ("warmup_ratio = 2", "train.warmup_ratio 2: must be a number in [0, 1]"),
    ("max_grad_norm = -1", "train.max_grad_norm -1: must be 0 (off) or a positive number"),
    ('bf16 = "yes"', "train.bf16 'yes': must be true or false"),
    ('lr_scheduler_type = "cosyne"', "train.lr_scheduler_type 'cosyne': must be one of cosine, linear"),
    ("checkpoint_every = -5", "train.checkpoint_every -5: must be 0 (off) or a positive integer"),
    ("chunk_size = 0", "train.chunk_size 0: must be a positive integer"),
    ("lora_alpha = 0", "train.lora_alpha 0: must be a positive number"),
    ('seed = "x"', "train.seed 'x': must be an integer"),
    ("colour = 1", "unknown training setting 'colour'; valid settings: max_steps, batch_size"),
]


@pytest.mark.parametrize(("line", "message"), BAD_TRAIN)
def test_every_training_setting_of_a_pair_is_checked(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(HarnessError) as err:
        load_pairs(_write(tmp_path, GOOD + f"[pairs.x.train]\n{line}\n"))
    assert str(err.value).startswith(f"pairs.toml: pair 'x': {message}") and "\n" not in str(err.value)


def test_the_training_rules_cover_every_train_config_field() -> None:
    from dataclasses import fields

    from kdcore.train_settings import TRAIN_RULES, TRAIN_SETTINGS
    from trainers.loop import TrainConfig

    assert list(TRAIN_RULES) == [f.name for f in fields(TrainConfig)]
    for f in fields(TrainConfig):  # every default is allowed by its own rule, every type is the field's
        assert TRAIN_RULES[f.name].check(f.default), f.name
        assert f.type.split(" | ")[0] == TRAIN_SETTINGS[f.name].kind.__name__, f.name


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_length = true", "'max_length' must be a positive integer, got True"),
        ('max_new_tokens = "48"', "'max_new_tokens' must be a positive integer, got '48'"),
        ("description = 3", "'description' must be a string"),
        ('chat_template_kwargs = "x"', "'chat_template_kwargs' must be a table"),
        ("model_kwargs = 1", "'model_kwargs' must be a table"),
        ("train = 3", "'train' must be a table"),
        ("sha256 = { teacher = 1 }", "'sha256' must be a table of sha256 hex strings"),
        ('sha256 = "abc"', "'sha256' must be a table of sha256 hex strings"),
    ],
)
def test_every_plain_field_of_a_pair_is_checked(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(HarnessError, match=re.escape(message)) as err:
        load_pairs(_write(tmp_path, GOOD + line + "\n"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("line", "message"), BAD_TRAIN[:8:3])
@pytest.mark.parametrize(
    "command", [("run",), ("sweep",), ("pairs", "--show", "x"), ("pairs",), ("supervise", "--pair", "x")]
)
def test_a_bad_pairs_file_gives_the_same_line_in_every_command(
    tmp_path: Path, monkeypatch, capsys, line: str, message: str, command: tuple[str, ...]
) -> None:
    from harness.cli import main

    path = _write(tmp_path, GOOD + f"[pairs.x.train]\n{line}\n")
    target = ["--pair", "x"] if command == ("run",) else ["--pairs", "x"] if command == ("sweep",) else []
    results = ["--results-dir", str(tmp_path / "results")] if command[0] in ("run", "sweep") else []
    monkeypatch.setattr(sys, "argv", ["harness", *command, *target, *results, "--pairs-file", str(path)])
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as done:
        main()
    output = capsys.readouterr()
    text = " ".join((output.out + output.err).split())
    assert done.value.code == 2 and f"error: pairs.toml: pair 'x': {message}" in text
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
