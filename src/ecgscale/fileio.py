"""Atomic, durable file writes and content hashes shared by every stage that writes results.

A write goes to a temporary file in the target's folder, is flushed to disk, and is renamed over
the target (then the folder entry is flushed), so a reader sees the old file or the new one, never
a partial one - also after a crash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
