"""Shipped benchmark data: checksums, record counts and fields, clear errors, and the `--data-source hub` plumbing."""

from __future__ import annotations

import gzip
import re
import shutil

import datasets
import pytest

from kdcore.errors import HarnessError
from tasks import data
from tasks.benchmarks.gsm8k import GSM8K
from tasks.data import DATA_DIR, fewshot_docs, load_docs

EXPECTED = {
    ("gsm8k", "test"): (1319, {"question", "answer"}),
    ("gsm8k", "train"): (7473, {"question", "answer"}),
    ("math500", "test"): (500, {"problem", "solution", "answer", "subject", "level", "unique_id"}),
    ("math", "test"): (5000, {"problem", "level", "type", "solution", "unique_id"}),
    ("math", "train"): (7500, {"problem", "level", "type", "solution", "unique_id"}),
    ("humaneval", "test"): (164, {"task_id", "prompt", "entry_point", "canonical_solution", "test"}),
    ("codealpaca", "train"): (1669, {"instruction", "input", "output", "file"}),
}


@pytest.mark.parametrize(("dataset", "split"), sorted(EXPECTED))
def test_shipped_splits_verify_and_have_their_records(dataset, split):
    count, fields = EXPECTED[dataset, split]
    docs = load_docs(dataset, split)
    assert len(docs) == count
    assert all(set(doc) == fields for doc in docs)


def test_every_listed_file_is_shipped_with_its_license():
    listed = data.expected_checksums(DATA_DIR)
    for name in listed:
        data.verify_file(DATA_DIR, name)
    for folder in ("gsm8k", "math", "humaneval", "codealpaca"):
        assert f"{folder}/LICENSE" in listed


def test_math500_train_is_the_math_train_set_and_disjoint_from_its_test():
    assert load_docs("math500", "train") == load_docs("math", "train")
    test_problems = {doc["problem"] for doc in load_docs("math500", "test")}
    assert not test_problems & {doc["problem"] for doc in load_docs("math", "train")}


def test_docs_are_fresh_copies():
    first = load_docs("humaneval")
    first[0]["prompt"] = "changed"
    assert load_docs("humaneval")[0]["prompt"] != "changed"


def copy_of_humaneval(root):
    """A data folder in `root` with the shipped HumanEval file and the shipped checksum list."""
    (root / "humaneval").mkdir()
    shutil.copy(DATA_DIR / "humaneval/HumanEval.jsonl.gz", root / "humaneval/HumanEval.jsonl.gz")
    shutil.copy(DATA_DIR / data.CHECKSUM_FILE, root / data.CHECKSUM_FILE)
    return root


def test_an_intact_copy_loads(tmp_path):
    assert len(load_docs("humaneval", root=copy_of_humaneval(tmp_path))) == 164


def test_a_corrupt_file_is_a_clear_error(tmp_path):
    root = copy_of_humaneval(tmp_path)
    path = root / "humaneval/HumanEval.jsonl.gz"
    records = gzip.decompress(path.read_bytes()).replace(b"HumanEval/0", b"HumanEval/X", 1)
    path.write_bytes(gzip.compress(records))
    with pytest.raises(HarnessError, match=r"HumanEval.jsonl.gz is corrupt: sha256 .* does not match"):
        load_docs("humaneval", root=root)


def test_a_missing_file_is_a_clear_error(tmp_path):
    root = copy_of_humaneval(tmp_path)
    (root / "humaneval/HumanEval.jsonl.gz").unlink()
    with pytest.raises(HarnessError, match=r"HumanEval\.jsonl\.gz is missing"):
        load_docs("humaneval", root=root)


def test_a_missing_checksum_list_is_a_clear_error(tmp_path):
    root = copy_of_humaneval(tmp_path)
    (root / data.CHECKSUM_FILE).unlink()
    with pytest.raises(HarnessError, match=r"checksum list .* is missing"):
        load_docs("humaneval", root=root)


def test_verification_runs_once_per_file_per_process(tmp_path, monkeypatch):
    root = copy_of_humaneval(tmp_path)
    hashed = []
    original = data.sha256_of
    monkeypatch.setattr(data, "sha256_of", lambda path: hashed.append(path) or original(path))
    load_docs("humaneval", root=root)
    load_docs("humaneval", root=root)
    assert hashed == [root / "humaneval/HumanEval.jsonl.gz"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("gsm8k", "validation"), "unknown gsm8k split 'validation'; valid choices: test, train"),
        (("humaneval", "train"), "unknown humaneval split 'train'; valid choices: test"),
        (("mmlu", "test"), "unknown data set 'mmlu'; valid choices: codealpaca, gsm8k, humaneval, math, math500"),
        (("gsm8k", "test", "s3"), "unknown data source 's3'; valid choices: hub, shipped"),
    ],
)
def test_bad_names_list_the_valid_choices(args, message):
    with pytest.raises(HarnessError, match=re.escape(message)):
        load_docs(*args)


def test_fewshot_examples_are_fixed_train_records():
    examples = fewshot_docs("gsm8k", 3)
    assert examples == fewshot_docs("gsm8k", 3)
    train = load_docs("gsm8k", "train")
    assert len(examples) == 3 and all(example in train for example in examples)
    assert fewshot_docs("gsm8k", 0) == []


@pytest.fixture
def fake_hub(monkeypatch):
    """Replaces `datasets.load_dataset` (no internet here): records each call, returns one row naming it."""
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"source": f"{path}/{name}/{split}"}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data.read_hub.cache_clear()
    yield calls
    data.read_hub.cache_clear()


def test_hub_source_loads_the_same_splits_through_datasets(fake_hub):
    assert GSM8K(data_source="hub").docs("train") == [{"source": "openai/gsm8k/main/train"}]
    assert load_docs("math500", "test", "hub") == [{"source": "HuggingFaceH4/MATH-500/None/test"}]
    assert load_docs("humaneval", "test", "hub") == [{"source": "openai/openai_humaneval/None/test"}]
    math_test = load_docs("math", "test", "hub")
    assert [call[1] for call in fake_hub[-7:]] == list(data.MATH_SUBJECTS)
    assert len(math_test) == 7 and {call[0] for call in fake_hub[-7:]} == {"EleutherAI/hendrycks_math"}


def test_hub_failure_is_a_clear_error(monkeypatch, fake_hub):
    def offline(path, name=None, split=None):
        raise ConnectionError("no internet")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HarnessError, match=r"could not load openai/gsm8k \(main, test\) from the .*: no internet"):
        load_docs("gsm8k", "test", "hub")
