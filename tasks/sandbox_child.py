"""The candidate program's side of the sandbox, and the plain-value format both sides speak.

Standard library only: `tasks.sandbox` runs this file's source as `python -I -S -B -c SOURCE` (no site-packages,
no environment, no project import) in the sandbox. The request comes on stdin as JSON: `program` (the code to
run), `entry_point` (the function to call), `calls` (encoded `[args, kwargs]`) and `guard` (install the audit hook
when the kernel does not isolate the program). The answer goes to the descriptor that was stdout as JSON:
`{"error": MESSAGE}` when the program does not load, else `{"outputs": [OUTCOME, ...]}`, one per call, each
`{"value": ENCODED}`, `{"raised": MESSAGE}` or `{"invalid": TYPE NAME}`; the program's own prints go to stderr.

Plain values are None, bool, int, float, str, bytes and lists, tuples, dicts, sets and frozensets of plain values,
of exactly those types (a subclass, e.g. one with an `__eq__` that is always true, is not plain). JSON holds None,
bool, int, float (NaN and infinities as JSON's usual extension), str and list natively; the rest are one-key
objects: `{"tuple": [...]}`, `{"dict": [[k, v], ...]}`, `{"set": [...]}`, `{"frozenset": [...]}`, `{"bytes": HEX}`.
Decoding builds nothing else, so a value read from the program cannot run code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

SCALARS = (type(None), bool, int, float, str)
TAGGED = {"tuple": tuple, "set": set, "frozenset": frozenset}
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
        "socket.__new__",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyname_ex",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
        "socket.sethostname",
        "sys._current_frames",
        "sys.setprofile",
        "sys.settrace",
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
    "sqlite3.connect": ((0, None),),
}
UNGUARDED_CALLS = ("mkfifo", "mknod", "fork", "forkpty", "system", "kill", "killpg", "putenv")


class NotPlain(TypeError):
    """A value that is not plain data (see the module docstring)."""


def encode(value: Any) -> Any:
    """`value` as JSON-ready data; NotPlain for anything but the plain types themselves."""
    kind = type(value)
    if kind in SCALARS:
        return value
    if kind is list:
        return [encode(item) for item in value]
    if kind in (tuple, set, frozenset):
        return {kind.__name__: [encode(item) for item in value]}
    if kind is dict:
        return {"dict": [[encode(key), encode(item)] for key, item in value.items()]}
    if kind is bytes:
        return {"bytes": value.hex()}
    raise NotPlain(kind.__name__)


def decode(data: Any) -> Any:
    """The plain value that `encode` gave `data`; NotPlain for anything `encode` does not produce."""
    kind = type(data)
    if kind in SCALARS:
        return data
    if kind is list:
        return [decode(item) for item in data]
    if kind is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag in TAGGED and type(body) is list:
            return TAGGED[tag](decode(item) for item in body)
        if tag == "dict" and type(body) is list and all(type(pair) is list and len(pair) == 2 for pair in body):
            return {decode(key): decode(item) for key, item in body}
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
    raise NotPlain(f"not an encoded plain value: {str(data)[:80]}")


def dumps(value: Any) -> str:
    """The canonical JSON text of an encoded value (the key of a recorded call)."""
    return json.dumps(value, separators=(",", ":"))


def audit_hook(sandbox_dir: str) -> Callable[[str, tuple[Any, ...]], None]:
    """An audit hook that refuses processes, signals, sockets, ctypes, tracing and file changes outside
    `sandbox_dir` (the guard where the kernel does not isolate the program; it cannot be removed once added)."""
    getcwd, readlink, realpath, isdir, join, fsdecode = (
        os.getcwd,
        os.readlink,
        os.path.realpath,
        os.path.isdir,
        os.path.join,
        os.fsdecode,
    )

    def resolve(path: Any, dir_fd: Any = None) -> str:
        if isinstance(path, int):
            return readlink(f"/proc/self/fd/{path}")
        base = readlink(f"/proc/self/fd/{dir_fd}") if isinstance(dir_fd, int) and dir_fd >= 0 else getcwd()
        return realpath(join(base, fsdecode(path)))

    def inside(path: str) -> bool:
        return path == sandbox_dir or path.startswith(sandbox_dir + os.sep)

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
            if not inside(resolved) and (writing or isdir(resolved)):
                deny(event, resolved)
        elif event in PATH_EVENTS:
            for path_index, dir_fd_index in PATH_EVENTS[event]:
                dir_fd = args[dir_fd_index] if dir_fd_index is not None and dir_fd_index < len(args) else None
                if path_index < len(args) and not inside(resolve(args[path_index], dir_fd)):
                    deny(event, args[path_index])

    return hook


def install_guard() -> None:
    """The audit hook, plus no `os` calls that make devices, FIFOs, processes or signals (they raise no event)."""
    sys.dont_write_bytecode = True
    hook = audit_hook(os.path.realpath(os.getcwd()))
    for name in UNGUARDED_CALLS:
        if hasattr(os, name):
            setattr(os, name, None)
    sys.addaudithook(hook)


def call(function: Callable[..., Any], call_data: Any) -> dict[str, Any]:
    """One call's outcome: its encoded return value, the message of what it raised, or its non-plain type."""
    try:
        args, kwargs = decode(call_data)
        value = function(*args, **kwargs)
    except BaseException as error:  # the program's exceptions, SystemExit and KeyboardInterrupt included
        return {"raised": str(error)[:1000]}
    try:
        return {"value": encode(value)}
    except NotPlain as error:
        return {"invalid": str(error)}
    except RecursionError:
        return {"invalid": "nested too deeply"}


def serve(request: dict[str, Any]) -> dict[str, Any]:
    """Load the program and make every call of `request` (the module docstring says its fields)."""
    namespace: dict[str, Any] = {"__name__": "__candidate__"}
    try:
        exec(compile(request["program"], "program.py", "exec"), namespace)
        function = namespace[request["entry_point"]]
    except BaseException as error:
        return {"error": str(error)[:1000]}
    return {"outputs": [call(function, call_data) for call_data in request["calls"]]}


def main() -> None:
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the program's prints join its stderr, never the answer
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError instead of killing silently
    request = json.loads(sys.stdin.read())
    sys.stdin.close()
    if request["guard"]:
        install_guard()
    reply = serve(request)
    try:
        text = json.dumps(reply)
    except (ValueError, RecursionError) as error:  # e.g. an int too long to write
        text = json.dumps({"error": f"the program's values cannot be written: {error}"[:1000]})
    answer.write(text)
    answer.flush()
    os._exit(0)  # no clean-up code of the program's (atexit, __del__) runs after the answer


if __name__ == "__main__":
    main()
