"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temp file in the same folder, fsync it, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:  # e.g. a full disk: the old file is untouched; name the file in the error
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A staging folder next to `path` to write a folder's files into; once the block ends it replaces `path` by
    renames, so a reader sees the old folder or the new one, whole. If the block fails the staging folder is
    removed and an I/O error (a full disk, a file size limit; also one a library reports as "os error N") is raised
    as an OSError naming `path`."""
    path = Path(path)
    staging, previous = path.with_name(f".{path.name}.staging"), path.with_name(f".{path.name}.previous")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        shutil.rmtree(previous, ignore_errors=True)
        if path.exists():
            path.rename(previous)
        staging.rename(path)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if (code := os_error_number(err)) is not None:
            raise OSError(code, os.strerror(code), str(path)) from err
        raise


def os_error_number(err: BaseException) -> int | None:
    """The errno of an I/O error: an OSError's, or the "(os error N)" a Rust library (safetensors) reports."""
    if isinstance(err, OSError):
        return err.errno
    found = re.search(r"os error (\d+)", str(err))
    return int(found.group(1)) if found else None
