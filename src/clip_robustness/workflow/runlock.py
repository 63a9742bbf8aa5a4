"""One Snakemake run per working directory, and no manual ``--unlock`` after a killed run.

Snakemake's own locks (``.snakemake/locks/``) record no process id: after ``kill -9`` or a lost login
session they stay behind, and the next run stops asking for ``--unlock``. The workflow therefore takes an
OS file lock (``flock``) on ``.snakemake/clip_robustness.run.lock`` when it is parsed by the main
Snakemake process and holds it until that process exits (the kernel releases it even on ``kill -9``):

- lock taken: no other run of this workflow is alive in the directory, so any Snakemake locks left are
  stale and are removed;
- lock held by a live process: a second run is refused with one message naming that process; a dry run
  is let through (it writes nothing).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

#: The lock file, relative to the working directory.
RUN_LOCK = Path(".snakemake/clip_robustness.run.lock")
#: Snakemake's own lock folder, relative to the working directory.
SNAKEMAKE_LOCKS = Path(".snakemake/locks")


class RunInProgressError(RuntimeError):
    """Another Snakemake run of this workflow is alive in the same working directory."""


def acquire_run_lock(workdir: str | os.PathLike = ".", *, dryrun: bool = False) -> IO[str] | None:
    """Take the run lock of ``workdir``; return the open lock file (keep a reference: closing it releases the lock).

    Removes Snakemake's stale locks when the lock is taken. Raises :class:`RunInProgressError` when another
    live process holds it, unless ``dryrun`` (then returns ``None`` and changes nothing).
    """
    workdir = Path(workdir)
    path = workdir / RUN_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown process"
        handle.close()
        if dryrun:
            log.info("another run holds %s (%s); dry run only", path, holder)
            return None
        raise RunInProgressError(
            f"another Snakemake run is working in {workdir.resolve()} ({holder}). This run was refused and changed "
            "nothing: wait for that run to finish (or stop it), then run the same command again."
        ) from None
    handle.seek(0)
    handle.truncate()
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}, started {stamp}\n")
    handle.flush()
    stale = workdir / SNAKEMAKE_LOCKS
    if stale.is_dir() and any(stale.iterdir()):
        log.warning("removing Snakemake locks left by an interrupted run: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    return handle
