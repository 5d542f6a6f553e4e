"""Hostile programs against the HumanEval sandbox and verdict: forged verdicts, escapes, leftovers. All must score 0.

Each attack is written as a HumanEval/0 (`has_close_elements`) or /2 (`truncate_number`) completion. Isolation
`bwrap` is what CI runs (.ci/run installs bubblewrap); `guard` is the fallback where it is missing.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import uuid

import pytest

from tasks import sandbox, verdict
from tasks.benchmarks.humaneval import HumanEval
from tasks.sandbox import run_program
from tasks.verdict import run_programs
from tests.test_humaneval import ISOLATIONS, needs_bwrap

TIMEOUT_S = 2.0
NO_ARGS = [[[], {"dict": []}]]


@pytest.fixture(scope="module")
def docs():
    return HumanEval().docs()


def verdicts(doc, bodies: dict[str, str], isolation: str) -> dict[str, str]:
    results = run_programs([(doc, body) for body in bodies.values()], timeout_s=TIMEOUT_S, isolation=isolation)
    return {name: result["result"] for name, result in zip(bodies, results, strict=True)}


def observe(expression_body: str, isolation: str = "bwrap") -> object:
    """What a program sees from inside: the value its function `f` returns."""
    answer = run_program(f"def f():\n{expression_body}", "f", NO_ARGS, timeout_s=10.0, isolation=isolation)
    assert "outputs" in answer, answer
    (outcome,) = answer["outputs"]
    return outcome.get("value", outcome)


FORGERIES = {
    "always-true __eq__": (
        "    class Yes:\n        def __eq__(self, other): return True\n        __hash__ = object.__hash__\n"
        "    return Yes()\n"
    ),
    "float subclass with a lax __eq__": (
        "    class F(float):\n        def __eq__(self, other): return True\n        __hash__ = float.__hash__\n"
        "        def __sub__(self, other): return 0.0\n    return F(0)\n"
    ),
    "'passed' appended through the caller's frames": (
        "    import sys\n    frame = sys._getframe()\n    while frame:\n"
        "        for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):\n"
        "            if isinstance(value, list): value.append('passed')\n"
        "        frame = frame.f_back\n    return None\n"
    ),
    "'passed' appended to every list found by gc": (
        "    import gc\n    for obj in gc.get_objects():\n        if type(obj) is list: obj.append('passed')\n"
        "        if type(obj) is dict and 'passed' in obj: obj['passed'] = True\n    return None\n"
    ),
    "trace hook replacing check.__code__": (
        "    import sys\n    def tracer(frame, event, arg):\n"
        "        check = frame.f_globals.get('check')\n"
        "        if check is not None: check.__code__ = (lambda candidate: None).__code__\n"
        "        return tracer\n    sys.settrace(tracer)\n"
        "    sys._getframe().f_back.f_trace = tracer\n    return None\n"
    ),
    "builtins overridden": "    import builtins\n    builtins.abs = lambda x: 0\n    return 0.5\n",
    "a fake answer printed to stdout": (
        "    import json, os\n    print(json.dumps({'outputs': [{'value': 0.5}] * 3}))\n    os._exit(0)\n"
    ),
    "a pickle written to every descriptor": (
        "    import os, pickle\n    class Payload:\n"
        "        def __reduce__(self): return (exec, (\"open({marker!r}, 'w')\",))\n"
        "    data = pickle.dumps(Payload())\n"
        "    for fd in range(1, 64):\n        try: os.write(fd, data)\n        except OSError: pass\n    os._exit(0)\n"
    ),
    "a pickle as the return value": (
        "    import os, pickle\n    class Payload:\n"
        "        def __reduce__(self): return (exec, (\"open({marker!r}, 'w')\",))\n"
        "    return pickle.dumps(Payload())\n"
    ),
    "exit before answering": "    import os\n    os._exit(0)\n",
    "SystemExit(0)": "    raise SystemExit(0)\n",
    "KeyboardInterrupt": "    raise KeyboardInterrupt\n",
    "a value too deep to write": "    x = []\n    for _ in range(100000): x = [x]\n    return x\n",
    "an answer too large to write": "    return 'x' * (64 << 20)\n",
}


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_forged_verdicts_score_0_and_the_honest_program_still_passes(docs, tmp_path, isolation):
    doc = docs[2]  # truncate_number: check asserts candidate(3.5) == 0.5 and abs(candidate(x) - y) < 1e-6
    marker = tmp_path / "pickle-ran"
    bodies = {name: body.replace("{marker!r}", repr(str(marker))) for name, body in FORGERIES.items()}
    bodies["honest"] = doc["canonical_solution"]
    results = verdicts(doc, bodies, isolation)
    assert results.pop("honest") == "passed"
    assert {name: verdict for name, verdict in results.items() if verdict == "passed"} == {}
    assert not marker.exists()
    # The trusted workers' own builtins and check are untouched: the canonical solution passes after the attacks.
    assert verdicts(doc, {"again": doc["canonical_solution"]}, isolation) == {"again": "passed"}


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_no_file_appears_outside_the_program_directory(docs, tmp_path, isolation):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    target = str(outside)
    bodies = {
        "sqlite3.connect": (
            f"    import sqlite3\n    sqlite3.connect({target + '/db'!r}).execute('create table t(x)')\n"
        ),
        "os.mkfifo": f"    import os\n    os.mkfifo({target + '/fifo'!r})\n",
        "os.mknod (FIFO)": f"    import os, stat\n    os.mknod({target + '/node'!r}, 0o600 | stat.S_IFIFO)\n",
        "os.mknod (device)": (
            f"    import os, stat\n    os.mknod({target + '/mem'!r}, 0o600 | stat.S_IFCHR, os.makedev(1, 1))\n"
        ),
        "posix.open": f"    import posix\n    posix.open({target + '/opened'!r}, posix.O_WRONLY | posix.O_CREAT)\n",
        "ctypes open": (f"    import ctypes\n    ctypes.CDLL(None).open({(target + '/c').encode()!r}, 0o101, 0o600)\n"),
        "hard link": f"    import os\n    os.link({target + '/keep'!r}, 'mine')\n    open('mine', 'w').write('x')\n",
    }
    results = verdicts(docs[0], bodies, isolation)
    assert not any(verdict == "passed" for verdict in results.values()), results
    assert sorted(os.listdir(outside)) == ["keep"]
    assert (outside / "keep").read_text() == "precious"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_writes_to_descriptors_1_and_2_never_reach_the_host(docs, capfd, monkeypatch, isolation):
    pool = verdict.worker_pool.__wrapped__(1)  # workers of its own, started under capfd: they share its stdout
    monkeypatch.setattr(verdict, "worker_pool", lambda workers: pool)
    marker = uuid.uuid4().hex
    body = f"    import os, sys\n    os.write(1, b'{marker}')\n    os.write(2, b'{marker}')\n    print('{marker}')\n"
    try:
        assert verdicts(docs[0], {"write": body}, isolation)["write"] != "passed"
        pool.submit(os.write, 1, b"the workers' own stdout is captured\n").result()
    finally:
        pool.shutdown()
    captured = capfd.readouterr()
    assert "the workers' own stdout is captured" in captured.out
    assert marker not in captured.out and marker not in captured.err


def kd_sandbox_dirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("kd-sandbox-")}


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_program_directory_is_removed_whatever_it_leaves(docs, tmp_path, isolation):
    outside = tmp_path / "outside-file"
    outside.write_text("precious")
    body = (
        f"    import os\n    os.symlink({str(outside)!r}, 'link')\n    os.symlink('/', 'root')\n"
        "    os.makedirs('deep/er')\n    open('deep/er/big', 'wb').write(b'x' * (4 << 20))\n"
        "    os.chmod('deep/er/big', 0)\n    os.chmod('deep/er', 0o500)\n    os.chmod('deep', 0)\n"
        "    os.chmod('.', 0)\n    return None\n"
    )
    before = kd_sandbox_dirs()
    assert verdicts(docs[0], {"litter": body}, isolation)["litter"].startswith("failed")
    assert kd_sandbox_dirs() <= before
    assert outside.read_text() == "precious"


def parent(pid: str) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[1]


def descendants_with(marker: str) -> list[str]:
    """This test process's descendants whose command line holds `marker`."""
    found, me = [], str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if marker.encode() not in cmdline.read():
                    continue
            ancestor = pid
            while ancestor not in ("0", "1", me):
                ancestor = parent(ancestor)
        except OSError:
            continue
        if ancestor == me:
            found.append(pid)
    return found


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_no_process_is_left_behind(docs, isolation):
    marker = uuid.uuid4().hex
    sleeper = f"['/bin/sh', '-c', 'sleep 600 # {marker}']"
    bodies = {
        "subprocess": f"    import subprocess\n    subprocess.Popen({sleeper}, start_new_session=True)\n",
        "os.posix_spawn": f"    import os\n    os.posix_spawn('/bin/sh', {sleeper}, {{}})\n",
        "posix.fork": (
            "    import posix, time\n    if posix.fork() == 0:\n"
            f"        posix.execv('/bin/sh', {sleeper})\n    return None\n"
        ),
        "ctypes fork then loop": (
            f"    import ctypes, os\n    if ctypes.CDLL(None).fork() == 0:\n        os.execv('/bin/sh', {sleeper})\n"
            "    while True: pass\n"
        ),
        "multiprocessing": (
            "    import multiprocessing, time\n"
            "    multiprocessing.Process(target=time.sleep, args=(600,), daemon=False).start()\n"
        ),
        "thread that outlives the call": (
            "    import threading, time\n"
            "    threading.Thread(target=time.sleep, args=(600,)).start()\n    return None\n"
        ),
    }
    results = verdicts(docs[0], bodies, isolation)
    assert not any(verdict == "passed" for verdict in results.values()), results
    assert results["ctypes fork then loop"] in ("timed out", "failed: sandbox: ctypes.dlopen  is not allowed")
    assert descendants_with(marker) == []
    assert descendants_with("The candidate program's side of the sandbox") == []  # no sandbox outlives its verdict


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_no_network(docs, isolation):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        bodies = {
            "tcp": f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n",
            "udp": (
                "    import socket\n"
                f"    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port}))\n"
            ),
            "dns": "    import socket\n    socket.getaddrinfo('localhost', 80)\n",
            "raw _socket": f"    import _socket\n    _socket.socket().connect(('127.0.0.1', {port}))\n",
        }
        results = verdicts(docs[0], bodies, isolation)
        assert not any(verdict == "passed" for verdict in results.values()), results
        with pytest.raises(BlockingIOError):
            server.accept()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_no_signal_reaches_another_process(docs, isolation):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(True))
    try:
        pid = os.getpid()
        bodies = {
            "os.kill": f"    import os, signal\n    os.kill({pid}, signal.SIGUSR1)\n",
            "kill via ctypes": f"    import ctypes\n    ctypes.CDLL(None).kill({pid}, 10)\n",
            "posix.kill": f"    import posix\n    posix.kill({pid}, 10)\n",
        }
        results = verdicts(docs[0], bodies, isolation)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not any(verdict == "passed" for verdict in results.values()), results
    assert received == []


@needs_bwrap
def test_isolated_programs_see_none_of_the_host(docs):
    harness_file, data_file = verdict.__file__, os.path.realpath("tasks/data/humaneval/HumanEval.jsonl.gz")
    assert observe(
        "    import os\n"
        f"    paths = ({harness_file!r}, {data_file!r}, '/etc/passwd', {sys.prefix!r})\n"
        "    files = [path for path in paths if os.path.exists(path)]\n"
        "    pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "    return files, pids, os.getuid(), sorted(os.listdir('/proc/self/fd')), os.listdir('/tmp'), os.getcwd()\n"
    ) == {"tuple": [[], [1, 2], 65534, ["0", "1", "2", "3", "4"], [], "/sandbox"]}
    hidden = [path for path in sandbox.hidden_dirs() if path.startswith(("/usr", os.path.realpath(sys.base_prefix)))]
    listing = "    import os\n    return [os.listdir(p) if os.path.isdir(p) else None for p in " + repr(hidden) + "]\n"
    assert hidden and observe(listing) == [[] for _ in hidden]  # emptied by a tmpfs over each


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_programs_inherit_only_their_own_descriptors_and_no_environment(isolation):
    seen = observe("    import os\n    return sorted(os.listdir('/proc/self/fd')), sorted(os.environ)\n", isolation)
    # 0-2: request, answer file, output file; 3: the answer's duplicate; 4: the listing itself
    environment = ["HOME", "LC_ALL", "PATH", "PWD"] if isolation == "bwrap" else ["LC_ALL", "PATH"]
    assert seen == {"tuple": [["0", "1", "2", "3", "4"], environment]}


@needs_bwrap
def test_isolated_programs_cannot_create_processes_or_devices():
    value = observe(
        "    import os, stat\n    outcomes = []\n"
        "    attempts = (lambda: os.fork(), lambda: os.mkfifo('fifo'), lambda: os.mknod('n', 0o600 | stat.S_IFIFO))\n"
        "    for attempt in attempts:\n"
        "        try:\n            attempt()\n            outcomes.append('done')\n"
        "        except OSError as error:\n            outcomes.append(error.errno)\n    return outcomes\n"
    )
    assert value == [1, 1, 1]  # EPERM from the seccomp filter


@needs_bwrap
def test_unisolated_scores_say_so(docs):
    doc = docs[0]
    result = run_programs([(doc, doc["canonical_solution"])], timeout_s=10.0, isolation="guard")
    assert result == [{"passed": True, "result": "passed", "isolated": False}]
    task = HumanEval(timeout_s=10.0)
    assert task.metrics_batch([doc], [doc["canonical_solution"]]) == [{"pass@1": 1.0}]  # bwrap here, as in CI


def test_missing_bubblewrap_falls_back_with_one_warning(monkeypatch, caplog):
    sandbox.default_isolation.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    try:
        with caplog.at_level(logging.WARNING, logger="tasks.sandbox"):
            assert sandbox.default_isolation() == "guard"
        (record,) = caplog.records
        assert "bubblewrap is not installed" in record.getMessage() and "\n" not in record.getMessage()
    finally:
        sandbox.default_isolation.cache_clear()


def test_values_that_are_not_plain_data_are_refused():
    from tasks.sandbox_child import NotPlain, decode, encode

    plain = [None, True, 3, 2.5, float("inf"), "s", b"\x00", (1, [2]), {"k": {1, 2}}, frozenset({3}), {(1, 2): None}]
    assert decode(encode(plain)) == plain
    assert [type(value) for value in decode(encode(plain))] == [type(value) for value in plain]

    class Sneaky(int):
        def __eq__(self, other):
            return True

    for value in (Sneaky(1), [Sneaky(1)], object(), 1j, {"k": print}):
        with pytest.raises(NotPlain):
            encode(value)
    for data in ({"tuple": [], "extra": 1}, {"pickle": "gASV"}, {"dict": [[1]]}, {"bytes": 3}):
        with pytest.raises(NotPlain):
            decode(data)
