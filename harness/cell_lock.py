"""A lock file per sweep cell in the results dir, so that sweeps sharing the dir (on one machine or several, over a
shared file system) run each cell once.

The lock is created with O_CREAT | O_EXCL (atomic on local file systems and NFSv3+) and holds its owner's host,
pid, start time and a random token. While held, a heartbeat thread touches it every `heartbeat_s`. A lock is stale,
and is taken over with a warning, when its owner is on this host and no longer alive, or when it has not been
touched for `stale_s` (its owner was killed, or its machine lost). Two sweeps taking over one stale lock in the same
instant can both run the cell; the record of either is valid (the leaderboard keeps the latest).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from harness.records import utc_now

HEARTBEAT_S = 30.0
STALE_S = 600.0  # twenty missed heartbeats: generous for clock skew between machines sharing the dir
logger = logging.getLogger(__name__)


class CellLock:
    """The lock at `path`: `acquire()` takes it or says who holds it; `release()` gives it back."""

    def __init__(self, path: Path, *, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S) -> None:
        self.path, self.heartbeat_s, self.stale_s = Path(path), heartbeat_s, stale_s
        self.token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Take the lock (None), or return who holds it ("host node-3, pid 4242, since ...")."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if not self._stale(holder):
                    return _describe(holder)
                logger.warning("taking over the stale lock %s (%s)", self.path, _describe(holder))
                self.path.unlink(missing_ok=True)
                continue
            owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": utc_now(), "token": self.token}
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(owner))
                handle.flush()
                os.fsync(handle.fileno())
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, name=f"heartbeat {self.path.name}", daemon=True)
            self._beat.start()
            return None
        return _describe(_read(self.path))

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, unless another process has taken it over meanwhile."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self._mine():
            self.path.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._mine():
                return
            try:
                os.utime(self.path)
            except OSError:
                return

    def _mine(self) -> bool:
        holder = _read(self.path)
        return holder is not None and holder.get("token") == self.token

    def _stale(self, holder: dict[str, Any] | None) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if age > self.stale_s:
            return True
        if holder is None or holder.get("host") != socket.gethostname():
            return False  # being written, or on another machine: only its heartbeat tells
        return not _alive(holder.get("pid"))


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's owner; None when it is gone, being written or unreadable."""
    try:
        owner = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "an owner still writing its lock"
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('started')}"
