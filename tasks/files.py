"""Atomic writes and file digests: the one place the pipeline writes a file whole or hashes one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `path`, renamed onto it when the block ends, removed if it raises:
    a reader sees the old file or the whole new one, never half of one (a full disk, a kill)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def feed(digest: Any, fh: BinaryIO) -> None:
    """Feed an open binary file's bytes into a running hash, 4 MB at a time."""
    for block in iter(lambda: fh.read(1 << 22), b""):
        digest.update(block)


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        feed(digest, fh)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """The short form the records and MLflow datasets carry: 16 hex digits of the sha256."""
    return file_sha256(path)[:16]
