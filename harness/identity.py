"""What a run compared, pinned: each model's weights and tokenizer, and the data of its train and eval splits.

A model is pinned by the sha256 of its weight files (local folders and the builtin pair) or, for a hub id, by
the commit of the snapshot `from_pretrained` loaded from the local Hugging Face cache (read offline, from the
snapshot folder's name); its tokenizer by the sha256 of its tokenizer files. Several files hash to one digest
the way `sha256sum` lists them: `cd <folder> && sha256sum <files, sorted> | sha256sum` gives the same value.

File digests are streamed and cached on disk by (absolute path, size, mtime), so a model's weights are hashed
once per machine, not once per run. Data: a shipped benchmark file is named by its checksum in
`tasks/data/SHA256SUMS` (checked when it is read); other splits (generated like `arith`, or from the hub) by
the sha256 of their records as canonical JSON lines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from harness.cache import cache_key, cache_root
from harness.pairs import Pair
from kdcore.io import atomic_write_text
from tasks import load_task
from tasks.data import DATA_DIR, SPLITS, expected_checksums, sha256_of, verify_file

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")  # the first pattern with files is the weights
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, streamed; cached on disk by (resolved path, size, mtime), so computed once."""
    path = Path(path).resolve()
    stat = path.stat()
    entry = (
        cache_root() / "file_sha256" / cache_key({"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns})
    )
    if entry.is_file():
        return entry.read_text().strip()
    digest = sha256_of(path)
    atomic_write_text(entry, digest + "\n")
    return digest


def files_sha256(folder: Path, names: Iterable[str]) -> str | None:
    """One digest for several files of `folder`: the sha256 of their `sha256sum` listing (sorted names);
    None when there are none."""
    names = sorted(names)
    if not names:
        return None
    listing = "".join(f"{file_sha256(folder / name)}  {name}\n" for name in names)
    return hashlib.sha256(listing.encode()).hexdigest()


def weight_files(folder: Path) -> list[str]:
    """The weight files of a model folder (safetensors, else the first other format present), relative names."""
    for pattern in WEIGHT_PATTERNS:
        found = sorted(str(p.relative_to(folder)) for p in folder.rglob(pattern) if p.is_file())
        if found:
            return found
    return []


def tokenizer_files(folder: Path) -> list[str]:
    return [name for name in TOKENIZER_FILES if (folder / name).is_file()]


def hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model as `from_pretrained` would load it offline, or None when the
    model is not in the Hugging Face cache. Reads only the cache: never the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def model_identity(ref: str, path: str | Path) -> dict[str, Any]:
    """`ref` (as the pair names it) pinned: {ref, weights_sha256, weights_files, revision, tokenizer_sha256}
    (`weights_files`: each weight file's own sha256, to check against a pair's declared checksums).

    `path` is what `harness.models.resolve(ref)` gave: a local folder (weights hashed, revision None) or a hub
    id (revision = the cached snapshot's commit, weights_sha256 None). A hub model missing from the cache gets
    revision None: it is recorded as unpinned rather than looked up online."""
    folder = Path(path)
    if folder.is_dir():
        weights = weight_files(folder)
        return {
            "ref": ref,
            "weights_sha256": files_sha256(folder, weights),
            "weights_files": {name: file_sha256(folder / name) for name in weights},
            "revision": None,
            "tokenizer_sha256": files_sha256(folder, tokenizer_files(folder)),
        }
    snapshot = hub_snapshot(str(path))
    return {
        "ref": ref,
        "weights_sha256": None,
        "weights_files": None,
        "revision": snapshot.name if snapshot else None,
        "tokenizer_sha256": files_sha256(snapshot, tokenizer_files(snapshot)) if snapshot else None,
    }


def model_identities(pair: Pair, teacher_path: str | Path, student_path: str | Path) -> dict[str, dict[str, Any]]:
    """A record's `models`: the pair's teacher and student pinned (`path`s as `harness.models.resolve` gave)."""
    return {
        "teacher": model_identity(pair.teacher, teacher_path),
        "student": model_identity(pair.student, student_path),
    }


def identity_key(identity: dict[str, Any]) -> str:
    """A cache key for a pinned model (`model_identity`): its weights and tokenizer (or hub revision), not where its
    files lie, so two checkouts share a cache and other weights at the same path never do."""
    return cache_key({"model": identity})


def _records_sha256(docs: Iterable[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update((json.dumps(doc, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return digest.hexdigest()


@cache
def split_identity(task_name: str, split: str) -> dict[str, str]:
    """{sha256, of}: the shipped file's listed checksum (`of` = its path under tasks/data/) when the task reads
    a shipped file, else the sha256 of the split's records as canonical JSON lines (`of` = 'records')."""
    task = load_task(task_name)
    shipped = SPLITS.get(getattr(task, "dataset", task_name), {}).get(split)
    if shipped is not None and getattr(task, "data_source", None) == "shipped":
        verify_file(DATA_DIR, shipped.file)
        return {"sha256": expected_checksums(DATA_DIR)[shipped.file], "of": f"tasks/data/{shipped.file}"}
    return {"sha256": _records_sha256(task.docs(split)), "of": "records"}


def data_identity(pair: Pair, limit: int | None) -> dict[str, Any]:
    """A record's `data`: the train split the prompts come from (and how many) and each benchmark's test split,
    with the evaluation settings (doc limit, dtype, chat template) that decide which problems are scored and how."""
    return {
        "train": {"task": pair.train_task, "split": "train", "prompts": pair.train_prompts}
        | split_identity(pair.train_task, "train"),
        "eval": {
            "limit": limit,
            "dtype": pair.dtype,
            "chat_template": pair.chat_template,
            "chat_template_kwargs": pair.chat_template_kwargs,
            "tasks": {name: {"split": "test"} | split_identity(name, "test") for name in pair.tasks},
        },
    }


def eval_settings(pair: Pair, limit: int | None) -> dict[str, Any]:
    """What decides a model's scores on a pair's benchmarks besides the model: the `eval` part of its data."""
    return data_identity(pair, limit)["eval"]
