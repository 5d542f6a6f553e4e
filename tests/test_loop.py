"""The training loop's bookkeeping: which steps log the entropy diagnostics, and how examples are read."""

from __future__ import annotations

import datasets
import pytest
import torch

from tests.tiny_training import synthetic_examples, tiny_student
from trainers.batch import collate, read_rows
from trainers.loop import TrainConfig, train
from trainers.objectives import load_method
from trainers.topk import topk_features, topk_logprobs


def test_entropy_diagnostics_are_logged_every_n_steps_and_at_the_last() -> None:
    config = TrainConfig(max_steps=6, batch_size=4, lr=1e-2, diagnostics_every=4)
    student, trained = tiny_student(), tiny_student()
    result = train(trained, load_method("hard"), synthetic_examples(), config, pad_id=0)
    assert [step for step, row in enumerate(result.history) if "student_entropy" in row] == [0, 4, 5]
    assert all("loss" in row for row in result.history)
    # how often the diagnostics are computed changes nothing else (and is not part of the run's settings); the
    # logged loss means may differ in the last digits (a sum over a strided column of the stacked terms)
    every = train(
        student,
        load_method("hard"),
        synthetic_examples(),
        TrainConfig(**{**config.to_dict(), "diagnostics_every": 1}),
        pad_id=0,
    )
    assert [row["loss"] for row in every.history] == pytest.approx([row["loss"] for row in result.history], rel=1e-6)
    for name, weight in student.state_dict().items():
        assert torch.equal(weight, trained.state_dict()[name]), name
    assert all(torch.isfinite(torch.tensor(row["student_entropy"])) for row in every.history)
    assert "diagnostics_every" not in config.to_dict()


def soft_label_dataset(folder) -> tuple[list[dict], datasets.Dataset]:
    """The synthetic examples with random top-4 soft labels, as a list and as the Arrow data set on disk."""
    examples = synthetic_examples()
    torch.manual_seed(0)
    for ex in examples:
        ids, logprobs = topk_logprobs(torch.randn(len(ex["completion_ids"]), 40) * 3, 4)
        ex["topk_ids"], ex["topk_logprobs"] = ids.tolist(), logprobs.tolist()
    features = datasets.Features(
        {
            "prompt_ids": datasets.List(datasets.Value("int32")),
            "completion_ids": datasets.List(datasets.Value("int32")),
            **topk_features(4),
        }
    )
    datasets.Dataset.from_list(examples, features=features).save_to_disk(str(folder))
    return examples, datasets.load_from_disk(str(folder))


def test_batched_column_reads_give_the_batches_row_reads_give(tmp_path) -> None:
    examples, data = soft_label_dataset(tmp_path)
    indices = [5, 0, 13, 3]
    for source in (data, data.with_format("torch"), data.select(range(10, 24))):
        rows = read_rows(source, indices)
        assert [row["completion_ids"] for row in rows] == [
            source.with_format(None)[i]["completion_ids"] for i in indices
        ]
        got = collate(rows, pad_id=0)
        expected = collate([source.with_format("torch")[i] for i in indices], pad_id=0)
        for name in ("input_ids", "attention_mask", "positions", "targets", "topk_ids", "topk_logprobs"):
            assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert read_rows(examples, indices) == [examples[i] for i in indices]


def test_training_on_the_arrow_data_set_equals_training_on_the_list(tmp_path) -> None:
    examples, data = soft_label_dataset(tmp_path)
    config = TrainConfig(max_steps=3, batch_size=4, lr=1e-2)
    from_list, from_arrow = tiny_student(), tiny_student()
    train(from_list, load_method("soft"), examples, config, pad_id=0)
    train(from_arrow, load_method("soft"), data.with_format("torch"), config, pad_id=0)
    for name, weight in from_list.state_dict().items():
        assert torch.equal(weight, from_arrow.state_dict()[name]), name
