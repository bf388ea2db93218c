"""Atomic, durable file writes, content hashes and a lock between processes, shared by every stage
that writes results.

A write goes to a temporary file in the target's folder, is flushed to disk, and is renamed over
the target (then the folder entry is flushed), so a reader sees the old file or the new one, never
a partial one - also after a crash.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created when missing) for the block: processes
    that take the lock on one path execute their blocks one at a time (POSIX `flock`; the lock
    goes with a process that dies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def file_hash(path: str | Path) -> str:
    """BLAKE2b-128 of a file's bytes (32 hex digits), read in 4 MiB chunks."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replace_durably(tmp: str | Path, path: str | Path) -> None:
    """Flush `tmp` to disk, rename it over `path`, and flush the folder entry."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    folder = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write `data` (text is UTF-8) to `path` atomically and durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        replace_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
