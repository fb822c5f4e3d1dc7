"""Atomic file writes: a temporary file in the same folder, then ``os.replace`` (atomic on POSIX).

The file gets the mode a plain ``open(path, "w")`` would give it (``0o666`` minus the user's umask), not the
``0o600`` of ``tempfile.mkstemp``: run folders on shared cluster storage stay readable by collaborators.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's current umask (read by setting it and putting it back, under a lock)."""
    with _UMASK_LOCK:
        current = os.umask(0o022)
        os.umask(current)
    return current


def mkstemp_public(folder: Path, prefix: str) -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``folder`` with the mode ``0o666 & ~umask`` (see the module docstring)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + ``os.replace`` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp_public(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())
