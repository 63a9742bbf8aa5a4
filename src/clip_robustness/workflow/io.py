"""Atomic writes: every file the pipeline produces appears complete or not at all.

A job killed at any point (SIGKILL, node loss, full disk) leaves either the previous file or nothing at the
output path, never a plausible partial file; its temp file is removed by the next write to the same path.
Files are created with the user's umask (group-readable on shared cluster file systems), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_files_of(path: str | os.PathLike) -> list[Path]:
    """Temp files that an interrupted :func:`atomic_path` for ``path`` left beside it."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success it is renamed to ``path``, on any error removed.

    The folder is created; leftovers of an earlier interrupted write to ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in temp_files_of(path):
        leftover.unlink(missing_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
