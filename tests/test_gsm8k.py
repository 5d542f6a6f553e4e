"""GSM8K scoring on real records, and agreement with lm-evaluation-harness's own gsm8k filters and metric."""

from __future__ import annotations

import random
from pathlib import Path

import lm_eval
import pytest
import yaml
from lm_eval.api.instance import Instance
from lm_eval.api.metrics import exact_match_hf_evaluate
from lm_eval.filters import build_filter_ensemble

from kdcore.errors import HarnessError
from tasks import load_task
from tasks.benchmarks.arith import Arith
from tasks.benchmarks.gsm8k import GSM8K

LM_EVAL_GSM8K = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml").read_text())
FILTER_TO_METRIC = {"strict-match": "strict_match", "flexible-extract": "flexible_match"}


@pytest.fixture(scope="module")
def sample():
    """30 real GSM8K test records, drawn with a fixed seed."""
    return random.Random(0).sample(GSM8K().docs("test"), 30)


def gold_number(doc) -> int:
    return int(doc["answer"].split("#### ")[-1].replace(",", ""))


def perturbed(doc) -> str:
    """The worked answer with its final number changed."""
    worked, _ = doc["answer"].rsplit("#### ", 1)
    return f"{worked}#### {gold_number(doc) + 1}"


def test_gold_answers_score_one_and_perturbed_ones_zero(sample):
    task = load_task("gsm8k")
    for doc in sample:
        assert task.metrics(doc, task.reference(doc)) == {"strict_match": 1.0, "flexible_match": 1.0}
        assert task.metrics(doc, perturbed(doc)) == {"strict_match": 0.0, "flexible_match": 0.0}


def chat_style_completions(doc) -> list[str]:
    """Answers in the forms models write, where lm-eval's strict and flexible filters often disagree."""
    n = gold_number(doc)
    return [
        doc["answer"],
        perturbed(doc),
        f"She makes ${n:,} in total.\n#### {n:,}.",
        f"The answer is {n}.",
        f"The answer is **{n:,}**",
        f"#### {n}\nThat is {n + 1} in total",
        f"She earns ${n}",
        f"The answer is ${n}.00",
        f"####{n}",
        f"The total is -{n}.",
        "I don't know.",
    ]


def lm_eval_scores(doc, completion: str) -> dict[str, float]:
    """lm-eval 0.4's gsm8k scoring of one completion: its yaml's filter_list and exact_match settings."""
    config = LM_EVAL_GSM8K
    (metric,) = config["metric_list"]
    kwargs = {key: value for key, value in metric.items() if key not in ("metric", "aggregation", "higher_is_better")}
    scores = {}
    for filter_config in config["filter_list"]:
        components = [
            [step["function"], {key: value for key, value in step.items() if key != "function"}]
            for step in filter_config["filter"]
        ]
        ensemble = build_filter_ensemble(filter_config["name"], components)
        instance = Instance("generate_until", doc, ("", {}), 0, resps=[completion])
        ensemble.apply([instance])
        prediction = instance.filtered_resps[filter_config["name"]]
        result = exact_match_hf_evaluate(predictions=[prediction], references=[doc["answer"]], **kwargs)
        scores[FILTER_TO_METRIC[filter_config["name"]]] = float(result["exact_match"])
    return scores


def test_scores_agree_with_lm_eval_gsm8k_filters(sample):
    task = GSM8K()
    disagreements = 0
    for doc in sample:
        for completion in chat_style_completions(doc):
            ours = task.metrics(doc, completion)
            assert ours == lm_eval_scores(doc, completion), completion
            disagreements += ours["strict_match"] != ours["flexible_match"]
    assert disagreements >= 3 * len(sample)  # the completions exercise cases where the two filters differ


def test_extract_reports_the_normalised_answer_of_the_primary_metric():
    completion = "#### 1,234\nSo she has $1,235."
    assert GSM8K().extract(completion) == "1235"
    assert GSM8K(primary_metric="strict_match").extract(completion) == "1234"
    assert GSM8K().extract("no number here") is None


def test_primary_metric_is_configurable():
    doc = {"question": "q", "answer": "2 + 2 = 4\n#### 4"}
    assert GSM8K().score(doc, "It is 4.") == 1.0
    assert GSM8K(primary_metric="strict_match").score(doc, "It is 4.") == 0.0
    with pytest.raises(HarnessError, match="unknown gsm8k primary metric 'loose'"):
        GSM8K(primary_metric="loose")


def test_prompt_is_zero_shot_by_default_and_few_shot_on_request(sample):
    doc = sample[0]
    (message,) = GSM8K().prompt(doc)
    assert message["role"] == "user" and doc["question"] in message["content"] and "####" in message["content"]
    messages = GSM8K(num_fewshot=2).prompt(doc)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    train_answers = {d["answer"] for d in GSM8K().docs("train")}
    assert all(m["content"] in train_answers for m in messages[1:4:2])
    assert messages[-1] == message


def test_arith_scores_with_the_same_extractor():
    arith, gsm8k = Arith(), GSM8K()
    doc = arith.docs("test")[0]
    n = gold_number(doc)
    for completion in (doc["answer"], f"#### {n:,}.", f"It is {n}.", f"#### {n + 1}", f"####  {n}"):
        ours = gsm8k.metrics(doc, completion)
        assert arith.metrics(doc, completion) == {
            "exact_match": ours["strict_match"],
            "flexible_match": ours["flexible_match"],
        }
    assert arith.score(doc, doc["answer"]) == 1.0 and arith.score(doc, f"#### {n + 1}") == 0.0
