"""Benchmark records: the files shipped in `tasks/data/` (sha256-checked on first read) or the same splits from the hub.

`load_docs(dataset, split, source)` is the one entry point. Shipped files are checked against `tasks/data/SHA256SUMS`
once per process; a missing or altered file is a HarnessError. `source="hub"` loads the split with
`datasets.load_dataset` (needs internet) and gives records with the hub data set's fields.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kdcore.errors import HarnessError, unknown_choice
from tasks.base import Doc

DATA_DIR = Path(__file__).with_name("data")
CHECKSUM_FILE = "SHA256SUMS"
DATA_SOURCES = ("shipped", "hub")
FEWSHOT_SEED = 1234
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


@dataclass(frozen=True)
class HubSplit:
    """A split on the Hugging Face hub: `path`, the configs concatenated in order (None = default), `split`."""

    path: str
    configs: tuple[str | None, ...]
    split: str


@dataclass(frozen=True)
class Split:
    """Where one split lives: a file under `tasks/data/` and its hub equivalent."""

    file: str
    hub: HubSplit | None  # None: shipped only


MATH_TRAIN = Split("math/train.jsonl", HubSplit("EleutherAI/hendrycks_math", MATH_SUBJECTS, "train"))
SPLITS: dict[str, dict[str, Split]] = {
    "gsm8k": {
        "test": Split("gsm8k/test.jsonl", HubSplit("openai/gsm8k", ("main",), "test")),
        "train": Split("gsm8k/train.jsonl", HubSplit("openai/gsm8k", ("main",), "train")),
    },
    # MATH-500 has no train split of its own: the MATH train set shares no problem with it.
    "math500": {
        "test": Split("math/math500.jsonl", HubSplit("HuggingFaceH4/MATH-500", (None,), "test")),
        "train": MATH_TRAIN,
    },
    "math": {
        "test": Split("math/test.jsonl", HubSplit("EleutherAI/hendrycks_math", MATH_SUBJECTS, "test")),
        "train": MATH_TRAIN,
    },
    "humaneval": {
        "test": Split("humaneval/HumanEval.jsonl.gz", HubSplit("openai/openai_humaneval", (None,), "test")),
    },
    # CC BY-NC 4.0 (non-commercial); a filtered subset, so no hub equivalent (see tasks/benchmarks/codealpaca.py)
    "codealpaca": {"train": Split("codealpaca/python.jsonl", None)},
}


def load_docs(dataset: str, split: str = "test", source: str = "shipped", root: Path = DATA_DIR) -> list[Doc]:
    """The records of `dataset`'s `split` from `source` ('shipped' or 'hub'), as fresh dicts."""
    if source not in DATA_SOURCES:
        raise unknown_choice("data source", source, DATA_SOURCES)
    if dataset not in SPLITS:
        raise unknown_choice("data set", dataset, SPLITS)
    if split not in SPLITS[dataset]:
        raise unknown_choice(f"{dataset} split", split, SPLITS[dataset])
    spec = SPLITS[dataset][split]
    if source == "hub" and spec.hub is None:
        raise HarnessError(f"{dataset} {split} is shipped only (tasks/data/{spec.file}); use --data-source shipped")
    records = read_shipped(root, spec.file) if source == "shipped" else read_hub(spec.hub)
    return [dict(record) for record in records]


def fewshot_docs(dataset: str, n: int, source: str = "shipped") -> list[Doc]:
    """`n` train records drawn with a fixed seed (as lm-eval draws few-shot examples)."""
    return random.Random(FEWSHOT_SEED).sample(load_docs(dataset, "train", source), n) if n else []


@cache
def expected_checksums(root: Path) -> dict[str, str]:
    """`{relative path: sha256}` from `root/SHA256SUMS` (the `sha256sum` format)."""
    path = root / CHECKSUM_FILE
    if not path.is_file():
        raise HarnessError(f"benchmark checksum list {path} is missing; reinstall kd-harness or use --data-source hub")
    return {name.strip(): digest for digest, name in (line.split(maxsplit=1) for line in path.read_text().splitlines())}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(root: Path, name: str) -> Path:
    """`root/name`, after checking it exists and matches its listed sha256; HarnessError otherwise."""
    path = root / name
    expected = expected_checksums(root).get(name)
    if expected is None:
        raise HarnessError(f"benchmark data file {name!r} has no checksum in {root / CHECKSUM_FILE}")
    if not path.is_file():
        raise HarnessError(f"benchmark data file {path} is missing; reinstall kd-harness or use --data-source hub")
    actual = sha256_of(path)
    if actual != expected:
        raise HarnessError(
            f"benchmark data file {path} is corrupt: sha256 {actual} does not match {expected}; "
            "reinstall kd-harness or use --data-source hub"
        )
    return path


@cache
def read_shipped(root: Path, name: str) -> tuple[Doc, ...]:
    """The JSONL (optionally gzipped) records of a verified shipped file; verified and parsed once per process."""
    path = verify_file(root, name)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as stream:
        return tuple(json.loads(line) for line in stream if line.strip())


@cache
def read_hub(spec: HubSplit) -> tuple[Doc, ...]:
    """The records of a hub split (its configs concatenated), through `datasets.load_dataset`."""
    import datasets

    records: list[Doc] = []
    for config in spec.configs:
        try:
            rows = datasets.load_dataset(spec.path, config, split=spec.split)
        except Exception as error:
            where = f"{spec.path} ({config or 'default'}, {spec.split})"
            raise HarnessError(f"could not load {where} from the Hugging Face hub: {error}") from error
        records.extend(dict(row) for row in rows)
    return tuple(records)
