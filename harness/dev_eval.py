"""Evaluation during training (`--eval-every N`): the student, greedy, on a dev slice of the pair's training task.

The dev slice is the DEV_DOCS train-split docs after the ones the pair trains on (held out); when the split has no
docs left over, its last DEV_DOCS training prompts (seen in training: the score then tracks fitting, not transfer,
and the record's `training.dev_slice` says so). The score is the task's primary metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.pairs import Pair
from harness.supervise import pair_renderer
from kdcore.errors import HarnessError
from tasks import load_task
from tasks.base import Doc
from tasks.transformers_backend import TransformersGenerator

DEV_DOCS = 64


def dev_docs(pair: Pair) -> tuple[list[Doc], str]:
    """The dev slice of `pair`'s training task and whether it is `held-out` or `seen` in training."""
    task = load_task(pair.train_task)
    if not task.scorable:
        raise HarnessError(
            f"--eval-every: the training task {pair.train_task!r} of pair {pair.name!r} has no answers; drop it"
        )
    docs = task.docs("train")
    held_out = docs[pair.train_prompts : pair.train_prompts + DEV_DOCS]
    if held_out:
        return held_out, "held-out"
    return docs[: pair.train_prompts][-DEV_DOCS:], "seen"


def dev_evaluator(
    pair: Pair, tokenizer: PreTrainedTokenizerBase, seed: int = 0
) -> Callable[[PreTrainedModel], dict[str, float]]:
    """`evaluate(student) -> {task: score}` for trainers.loop: greedy generation with the pair's evaluation
    budget for the task, on the training weights themselves (HF generate)."""
    task = load_task(pair.train_task, **pair.task_options(pair.train_task))
    docs, _ = dev_docs(pair)
    render = pair_renderer(pair, tokenizer)
    prompts = [render(task.prompt(doc)) for doc in docs]
    sampling = replace(pair.evaluation.sampling(task, seed), temperature=0.0, top_p=1.0, top_k=0, n=1)

    def evaluate(student: PreTrainedModel) -> dict[str, float]:
        generator = TransformersGenerator(student, tokenizer, description=f"dev {task.name}")
        outs = generator.generate(prompts, sampling)
        metrics = task.score_batch(docs, [out[0].text for out in outs])
        return {task.name: sum(m[task.primary_metric] for m in metrics) / len(metrics)}

    return evaluate
