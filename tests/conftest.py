"""Shared fixtures: one thread, an isolated cache, and tiny models built offline."""

from __future__ import annotations

import os

import pytest
import torch

from harness import tiny

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HARNESS_NO_PROGRESS", "1")
os.environ.setdefault("COLUMNS", "200")  # rich tables untruncated in captured output


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write to the user's cache; each test session shares one (tiny pair built once)."""
    monkeypatch.setenv("HARNESS_CACHE", os.environ.get("HARNESS_TEST_CACHE") or str(_session_cache(tmp_path_factory)))


_CACHE: list[str] = []


def _session_cache(factory: pytest.TempPathFactory) -> str:
    if not _CACHE:
        _CACHE.append(str(factory.getbasetemp() / "harness-cache"))
    return _CACHE[0]


MINI = tiny.TinySpec(  # head size 32 (hidden / heads), as vLLM's CPU attention needs
    teacher=tiny.TinyModelSpec(
        hidden_size=64, layers=1, heads=2, intermediate_size=128, steps=3, lr=1e-3, batch_size=8
    ),
    student=tiny.TinyModelSpec(hidden_size=64, layers=1, heads=2, intermediate_size=64, steps=2, lr=1e-3, batch_size=8),
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """In CI (`CI=true`, set by .ci/run) a skipped test is a failure: every test must run there."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"


@pytest.fixture
def mini_tiny(monkeypatch: pytest.MonkeyPatch) -> tiny.TinySpec:
    """The tiny pair in miniature (a few training steps, built once into the test cache), so end-to-end runs take
    seconds; without this fixture `builtin:tiny/...` is the shipped pair."""
    monkeypatch.setattr(tiny, "DEFAULT_SPEC", MINI)
    return MINI


@pytest.fixture
def own_tiny_cache(mini_tiny, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A `$HARNESS_CACHE` of this test's own that shares the session's miniature tiny pair (so supervision and
    reference caches start empty but the pair is not rebuilt); its path."""
    models = tiny.ensure_tiny_pair().parent
    cache = tmp_path_factory.mktemp("own-cache")
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    (cache / "tiny").symlink_to(models)
    return cache


@pytest.fixture
def trained_examples(monkeypatch: pytest.MonkeyPatch) -> list[list[dict]]:
    """The training examples of each run the test makes, as the run hands them to training."""
    from harness import phases

    seen: list[list[dict]] = []
    real_train = phases.train

    def train(student, objective, examples, *args, **kwargs):
        seen.append([dict(examples[i]) for i in range(len(examples))])
        return real_train(student, objective, examples, *args, **kwargs)

    monkeypatch.setattr(phases, "train", train)
    return seen


@pytest.fixture
def greedy_ids():
    """`greedy_ids(ref, examples, max_new_tokens)`: model `ref`'s greedy completion of each example's prompt, as a
    data source stores it (an empty completion is `[eos]`)."""
    from harness.models import load_model, resolve
    from tasks.protocol import Sampling
    from tasks.transformers_backend import TransformersGenerator

    def completions(ref: str, examples: list[dict], max_new_tokens: int) -> list[list[int]]:
        model, tokenizer = load_model(resolve(ref))
        prompts = [[int(t) for t in ex["prompt_ids"]] for ex in examples]
        done = TransformersGenerator(model, tokenizer).generate_ids(prompts, Sampling(max_new_tokens=max_new_tokens))
        return [c or [tokenizer.eos_token_id] for c in done]

    return completions
