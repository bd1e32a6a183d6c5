"""Writing files so that a reader never sees half of one, and hashing them.

Every output of the pipeline that another process may read while it is written (manifests,
checkpoints, cell outputs, mosaics, reports) takes its final name only once it is complete: it is
written to a hidden sibling named for this process and thread, then ``os.replace``d over the
target (atomic on POSIX within a folder). A killed writer leaves only its temporary file, which
:func:`remove_stale` or the next writer of the same process clears.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "temp_sibling",
    "atomic_path",
    "atomic_write",
    "write_text",
    "write_bytes",
    "file_sha256",
    "sha256_hex",
    "remove_stale",
]

_CHUNK = 1 << 22


def temp_sibling(path: str | Path, tag: str = "tmp") -> Path:
    """``.<name>.<tag>-<pid>-<thread><suffix>`` beside ``path``: unique per writer, hidden, and
    ending in the target's suffix (drivers that pick a format by extension still do)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{tag}-{os.getpid()}-{threading.get_ident()}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False, tag: str = "tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``, on any
    error it is removed and ``path`` is left as it was. ``fsync``: flush the file to disk first
    (state that must survive a power cut, e.g. a job manifest)."""
    path = Path(path)
    tmp = temp_sibling(path, tag)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, writer: Callable[[Path], object], *, fsync: bool = False) -> Path:
    """``writer(tmp)`` writes the file, which then takes the name ``path``; returns ``path``."""
    with atomic_path(path, fsync=fsync) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def remove_stale(path: str | Path, tag: str = "tmp") -> int:
    """Remove temporary siblings of ``path`` left by killed writers (any process); how many."""
    path = Path(path)
    n = 0
    for p in path.parent.glob(f".{path.stem}.{tag}-*{path.suffix}"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def sha256_hex(stream) -> str:
    """sha256 of a binary file object, read in 4 MiB blocks."""
    h = hashlib.sha256()
    for block in iter(lambda: stream.read(_CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a local file's bytes, cached by (path, size, modification time): checkpoints are
    hashed for every job fingerprint and prediction run, and are tens of MB."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256_cached(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return sha256_hex(f)
