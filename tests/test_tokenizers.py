"""The real tokenizers and chat templates: built offline from the registry packages, they encode as the models'
own tokenizers do (Meta's published test encodings; tiktoken with the same ranks, pattern and special tokens, the
algorithm the ranks were made for, on every shipped GSM8K, MATH-500 and HumanEval prompt rendered with the pair's
template), and each template renders the published format."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest

from harness import tokenizers
from harness.pairs import get_pair
from harness.supervise import pair_renderer
from kdcore.errors import HarnessError
from tasks import load_task

pytest.importorskip("llama_models")
pytest.importorskip("dashscope")
tiktoken = pytest.importorskip("tiktoken")

CASES = json.loads((Path(__file__).parent / "data" / "chat_template_cases.json").read_text())
LLAMA, QWEN = "meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"
R1, QWEN3 = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "Qwen/Qwen3-1.7B"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The real tokenizers, built once for this module (about 30 s each)."""
    cache = os.environ.get("HARNESS_TEST_CACHE") or tmp_path_factory.mktemp("tokenizers")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE", str(cache))
        return {hub_id: tokenizers.real_tokenizer(hub_id) for hub_id in (LLAMA, QWEN, R1, QWEN3)}


def reference_encoding(hub_id: str) -> tiktoken.Encoding:
    """tiktoken over the same ranks, split pattern and special tokens."""
    recipe = tokenizers.recipe_for(hub_id)
    ranks = tokenizers.load_ranks(tokenizers._ranks_file(recipe))
    specials = {token: len(ranks) + i for i, (token, _) in enumerate(recipe.specials)}
    return tiktoken.Encoding(recipe.family, pat_str=recipe.pattern, mergeable_ranks=ranks, special_tokens=specials)


def test_llama_encodes_as_metas_own_tests_say(built) -> None:
    # llama_models/llama3/tests/api/test_tokenizer.py (llama-models 0.3.0): test_encode
    tokenizer = built[LLAMA]
    assert tokenizer("This is a test sentence.")["input_ids"] == [128000, 2028, 374, 264, 1296, 11914, 13]
    assert tokenizer.decode([128000, 2028, 374, 264, 1296, 11914, 13, 128001]) == (
        "<|begin_of_text|>This is a test sentence.<|end_of_text|>"
    )
    text = tokenizer.apply_chat_template([{"role": "user", "content": "This is a test sentence."}], tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    user_turn = [128006, 882, 128007, 271, 2028, 374, 264, 1296, 11914, 13, 128009]  # test_encode_message
    assert ids[-len(user_turn) :] == user_turn and ids[0] == 128000


def test_special_tokens_and_end_ids_are_the_models(built) -> None:
    llama, qwen, r1, qwen3 = (built[h] for h in (LLAMA, QWEN, R1, QWEN3))
    assert (len(llama), llama.bos_token_id, llama.eos_token_id, llama.pad_token_id) == (128256, 128000, 128009, None)
    assert llama.convert_tokens_to_ids(["<|eom_id|>", "<|end_of_text|>"]) == [128008, 128001]
    assert (len(qwen), qwen.eos_token_id, qwen.pad_token_id, qwen.bos_token_id) == (151665, 151645, 151643, None)
    assert qwen.convert_tokens_to_ids(["<|im_start|>", "<|file_sep|>"]) == [151644, 151664]
    assert (len(qwen3), qwen3.convert_tokens_to_ids("<think>"), qwen3.convert_tokens_to_ids("</think>")) == (
        151669,
        151667,
        151668,
    )
    assert (r1.bos_token_id, r1.eos_token_id, r1.pad_token_id) == (151646, 151643, 151643)
    assert r1.convert_tokens_to_ids(["<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"]) == [
        151644,
        151645,
        151648,
        151649,
    ]
    assert qwen.get_vocab() != r1.get_vocab()  # the same ranks, different added tokens
    assert tokenizers.recipe_for(LLAMA).end_ids == (128001, 128008, 128009)
    assert tokenizers.recipe_for(QWEN).end_ids == (151645, 151643)


@pytest.mark.parametrize(("hub_id", "pair"), [(LLAMA, "llama"), (QWEN, "qwen"), (R1, "deepseek"), (QWEN3, "qwen3")])
def test_every_shipped_prompt_encodes_as_tiktoken_does(built, hub_id: str, pair: str) -> None:
    tokenizer, reference = built[hub_id], reference_encoding(hub_id)
    render = pair_renderer(get_pair(pair), tokenizer)
    nfc = tokenizers.recipe_for(hub_id).nfc
    checked = 0
    for name in ("gsm8k", "math500", "humaneval"):
        task = load_task(name)
        for doc in task.docs("test"):
            text = render(task.prompt(doc)) + task.reference(doc)
            expected = reference.encode(unicodedata.normalize("NFC", text) if nfc else text, allowed_special="all")
            assert tokenizer(text, add_special_tokens=False)["input_ids"] == expected, text[:200]
            checked += 1
    assert checked == 1319 + 500 + 164


def render(hub_template: str, data: dict) -> str:
    from transformers.utils.chat_template_utils import _compile_jinja_template

    return _compile_jinja_template((tokenizers.TEMPLATES / hub_template).read_text()).render(**data)


@pytest.mark.parametrize(
    ("template", "case"),
    [
        ("qwen2.5-instruct.jinja", "Qwen/Qwen2.5-7B-Instruct"),
        ("qwen3.jinja", "Qwen/Qwen3-0.6B"),
        ("llama-3.1-instruct.jinja", "meta-llama/Llama-3.1-8B-Instruct"),
        ("deepseek-coder-instruct.jinja", "deepseek-ai/deepseek-coder-33b-instruct"),
    ],
)
def test_templates_render_the_published_examples(template: str, case: str) -> None:
    assert render(template, CASES[case]["data"]) == CASES[case]["target"]


def test_llama_32_dates_its_system_turn_and_otherwise_renders_as_31() -> None:
    data = {"messages": [{"role": "user", "content": "Hi"}], "bos_token": "<|begin_of_text|>"}
    fixed = {**data, "date_string": "26 Jul 2024"}
    assert render("llama-3.2-instruct.jinja", fixed) == render("llama-3.1-instruct.jinja", fixed)
    assert "Today Date: 01 Jan 2030\n" in render(
        "llama-3.2-instruct.jinja", {**data, "strftime_now": lambda f: "01 Jan 2030"}
    )


def test_r1_opens_the_thinking_block_and_keeps_no_system_turn(built) -> None:
    prompt = built[R1].apply_chat_template(
        [{"role": "user", "content": "What is 1 + 1?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<｜begin▁of▁sentence｜><｜User｜>What is 1 + 1?<｜Assistant｜><think>\n"
    history = built[R1].apply_chat_template(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "<think>\nthe user greets\n</think>\n\nHello!"},
            {"role": "user", "content": "Bye"},
        ],
        tokenize=False,
    )
    assert history == "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>\n\nHello!<｜end▁of▁sentence｜><｜User｜>Bye"


def test_gemma_refuses_a_system_turn_and_alternates_roles() -> None:
    from jinja2.exceptions import TemplateError

    data = {"bos_token": "<bos>", "add_generation_prompt": True}
    user = {"role": "user", "content": "Hi"}
    assert render("gemma-2-it.jinja", {**data, "messages": [user]}) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(TemplateError, match="System role not supported"):
        render("gemma-2-it.jinja", {**data, "messages": [{"role": "system", "content": "Be brief."}, user]})


@pytest.mark.parametrize("hub_id", ["google/gemma-2-2b-it", "deepseek-ai/deepseek-coder-1.3b-instruct", "gpt2"])
def test_models_without_a_packaged_vocabulary_say_so_in_one_line(hub_id: str) -> None:
    with pytest.raises(HarnessError) as err:
        tokenizers.real_tokenizer(hub_id)
    message = str(err.value)
    assert "\n" not in message and f"no real tokenizer for {hub_id!r}" in message and LLAMA in message


def test_a_ranks_file_that_is_not_the_pinned_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    recipe = dataclasses.replace(tokenizers.recipe_for(QWEN), ranks_sha256="0" * 64)
    with pytest.raises(HarnessError, match=r"qwen.tiktoken: sha256 b2b1b8df.*, expected 0000"):
        tokenizers._ranks_file(recipe)


def test_generation_ends_at_every_end_id_of_the_generation_config() -> None:
    from types import SimpleNamespace

    from harness.trace_filter import ended_at_eos
    from tasks.generation import end_token_ids

    llama = SimpleNamespace(eos_token_id=128009)
    assert end_token_ids(llama, SimpleNamespace(eos_token_id=[128001, 128008, 128009])) == [128009, 128001, 128008]
    assert end_token_ids(llama, SimpleNamespace(eos_token_id=128009)) == [128009]
    assert end_token_ids(llama, None) == [128009]
    traces = [[5, 128008], [5, 128009], [5, 6], []]
    assert ended_at_eos(traces, [128001, 128008, 128009]) == [True, True, False, False]
    assert ended_at_eos(traces, 128009) == [False, True, False, False]  # one id: a trace ending at <|eom_id|> is cut
    assert ended_at_eos(traces, None) == [True] * 4


def test_the_llama_pairs_prompts_do_not_depend_on_the_date(built) -> None:
    for name in ("llama", "llama-3b"):
        prompt = pair_renderer(get_pair(name), built[LLAMA])([{"role": "user", "content": "1 + 1?"}])
        assert "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" in prompt
