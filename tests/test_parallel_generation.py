"""Data-parallel generation: worker processes share each call's prompts and give back what one generator gives
for the same slices, in order; the parallel flags need vLLM."""

from __future__ import annotations

from functools import partial

import pytest

from harness.models import resolve
from harness.pairs import get_pair
from kdcore.errors import HarnessError
from tasks import load_task
from tasks.backends import make_generator
from tasks.generation import Engine, render_prompt
from tasks.parallel import DataParallelGenerator
from tasks.protocol import Sampling
from tasks.transformers_backend import TransformersGenerator

TWELVE = Sampling(max_new_tokens=12)
LINE = Sampling(max_new_tokens=12, stop=("\n",))


@pytest.mark.slow
def test_workers_share_a_call_and_answer_in_order(mini_tiny) -> None:
    folder = resolve(get_pair("tiny").student)
    single = TransformersGenerator(folder)
    task = load_task("arith")
    prompts = [render_prompt(single.tokenizer, task.prompt(doc)) for doc in task.docs("test")[:7]]
    ids = [single.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    parallel = DataParallelGenerator(partial(TransformersGenerator, folder), workers=2)
    try:
        texts = parallel.generate(prompts, LINE)
        tokens = parallel.generate_ids(ids, TWELVE)
        with pytest.raises(RuntimeError, match="generation worker 0 of 2 failed: TypeError"):
            parallel.generate_ids(ids, Sampling(max_new_tokens="twelve"))  # type: ignore[arg-type]
        assert parallel.generate_ids(ids[:1], TWELVE) == tokens[:1]  # still answering, in step
    finally:
        parallel.close()
    # worker 0 got the first 3 prompts, worker 1 the other 4
    assert texts == single.generate(prompts[:3], LINE) + single.generate(prompts[3:], LINE)
    assert tokens == single.generate_ids(ids[:3], TWELVE) + single.generate_ids(ids[3:], TWELVE)
    assert parallel.devices == 2 and all(not p.is_alive() for p in parallel.processes)


def test_parallel_generation_needs_vllm() -> None:
    with pytest.raises(HarnessError, match="--tensor-parallel 2 / --data-parallel 1 need vLLM"):
        make_generator("m", lambda: None, backend="transformers", engine=Engine(tensor_parallel=2))
