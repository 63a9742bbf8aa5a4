"""The decoded-array disk budget (config ``inference.decoded_budget_gb``): decoding waits for consumers to free space.

Decoded arrays (``data/decoded/{dataset}/{key}.npy``) are ``temp()`` files: Snakemake deletes each once its last
logits job is done. Without a cap, CPU decode jobs can run far ahead of the GPU queue and fill a scratch disk. With
a budget, a decode job first *reserves* the bytes of every array it will write:

- bytes alive = the finished arrays under the decoded folder (``*.npy``) + the reservations of running decode jobs;
- it reserves only when ``alive + its bytes <= budget`` (checked and recorded under an exclusive ``flock``),
  otherwise it waits (polling) until logits jobs finish and Snakemake deletes their arrays;
- its reservation file ``.budget/{host}-{pid}.json`` lives until the job's arrays are written, then goes; a job
  killed on this host is detected by its dead pid, one killed elsewhere by its reservation going stale (not
  refreshed for :data:`STALE_AFTER_S`).

Each reservation appends one line to ``.budget/ledger.jsonl`` (time, job, bytes reserved, bytes alive before,
budget): the record the tests check. A group larger than the budget fails at once, naming both sizes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

#: Folder (inside the decoded root) of reservations, the lock file and the ledger.
BUDGET_DIR = ".budget"

#: A reservation not refreshed for this many seconds belongs to a dead job.
STALE_AFTER_S = 600.0

#: Bytes per GB of ``decoded_budget_gb`` (decimal, as disks are sold).
BYTES_PER_GB = 10**9


def _size(n_bytes: int) -> str:
    return f"{n_bytes / BYTES_PER_GB:.3f} GB ({n_bytes:,} bytes)"


class DecodedBudgetError(RuntimeError):
    """A decode job cannot fit its arrays in the decoded-array budget."""


def finished_array_bytes(root: str | os.PathLike) -> int:
    """Bytes of the finished decoded arrays (``*.npy``) under ``root``."""
    root = Path(root)
    return sum(p.stat().st_size for p in root.glob("*/*.npy") if p.is_file())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_reservations(root: str | os.PathLike, now: float | None = None) -> dict[Path, int]:
    """Reservation file -> bytes, for reservations of running decode jobs; stale ones are removed."""
    folder = Path(root) / BUDGET_DIR
    now = time.time() if now is None else now
    host = socket.gethostname()
    live = {}
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
            age = now - path.stat().st_mtime
        except (OSError, json.JSONDecodeError):
            continue
        dead = (record.get("host") == host and not _alive(int(record.get("pid", -1)))) or age > STALE_AFTER_S
        if dead:
            log.warning("removing the stale decoded-budget reservation %s (%s)", path, record)
            path.unlink(missing_ok=True)
            continue
        live[path] = int(record["bytes"])
    return live


def alive_bytes(root: str | os.PathLike) -> int:
    """Bytes alive under the budget: finished arrays plus the reservations of running decode jobs."""
    return finished_array_bytes(root) + sum(live_reservations(root).values())


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    folder = root / BUDGET_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


@contextlib.contextmanager
def reserve(
    root: str | os.PathLike,
    n_bytes: int,
    budget_bytes: int | None,
    job: str,
    *,
    poll_s: float = 2.0,
    max_wait_s: float = 3600.0,
) -> Iterator[Path | None]:
    """Hold a reservation of ``n_bytes`` under ``root`` (the decoded folder) while the body writes the arrays.

    ``budget_bytes``: the cap (``None``: no cap, nothing reserved or recorded). Waits while the budget is full;
    raises :class:`DecodedBudgetError` when ``n_bytes`` alone exceeds the budget, or after ``max_wait_s`` seconds
    of waiting (logits jobs failed and their arrays stay, or the budget is smaller than one logits job's inputs).
    Yields the reservation file (refresh it with :func:`refresh` during long writes).
    """
    if budget_bytes is None:
        yield None
        return
    root = Path(root)
    if n_bytes > budget_bytes:
        raise DecodedBudgetError(
            f"{job}: its decoded arrays need {_size(n_bytes)}, more than inference.decoded_budget_gb "
            f"({_size(budget_bytes)}): raise the budget to at least the largest decode group "
            "(`make plan` prints it), or set inference.decoded_cache: false"
        )
    path = root / BUDGET_DIR / f"{socket.gethostname()}-{os.getpid()}.json"
    before = _reserve_when_room(root, path, n_bytes, budget_bytes, job, poll_s=poll_s, max_wait_s=max_wait_s)
    log.info(
        "%s: reserved %.3f GB of decoded-array budget (%.3f GB alive before, budget %.3f GB)",
        job,
        n_bytes / BYTES_PER_GB,
        before / BYTES_PER_GB,
        budget_bytes / BYTES_PER_GB,
    )
    try:
        yield path
    finally:
        with _locked(root):
            path.unlink(missing_ok=True)


def _reserve_when_room(
    root: Path, path: Path, n_bytes: int, budget_bytes: int, job: str, *, poll_s: float, max_wait_s: float
) -> int:
    """Poll until ``n_bytes`` fit the budget, then write the reservation ``path``; return the bytes alive before."""
    start = last_log = time.monotonic()
    while True:
        reserved, before = _try_reserve(root, path, n_bytes, budget_bytes, job)
        if reserved:
            return before
        waited = time.monotonic() - start
        if waited > max_wait_s:
            raise DecodedBudgetError(
                f"{job}: waited {waited:.0f} s for {n_bytes / BYTES_PER_GB:.3f} GB of decoded-array budget "
                f"({before / BYTES_PER_GB:.3f} of {budget_bytes / BYTES_PER_GB:.3f} GB alive under {root}); the logits "
                "jobs that would free it are not finishing. Check for failed cache_logits jobs, or raise "
                "inference.decoded_budget_gb"
            )
        if time.monotonic() - last_log > 60:
            log.info(
                "%s: waiting for decoded-array budget (%.3f GB alive, %.3f GB needed, budget %.3f GB)",
                job,
                before / BYTES_PER_GB,
                n_bytes / BYTES_PER_GB,
                budget_bytes / BYTES_PER_GB,
            )
            last_log = time.monotonic()
        time.sleep(poll_s)


def _try_reserve(root: Path, path: Path, n_bytes: int, budget_bytes: int, job: str) -> tuple[bool, int]:
    """Under the lock, reserve ``n_bytes`` (reservation file and ledger line) if they fit; (reserved, alive before)."""
    with _locked(root):
        before = alive_bytes(root)
        if before + n_bytes > budget_bytes:
            return False, before
        record = {
            "job": job,
            "bytes": int(n_bytes),
            "alive_before": int(before),
            "budget": int(budget_bytes),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
        }
        path.write_text(json.dumps(record))
        with open(root / BUDGET_DIR / "ledger.jsonl", "a") as ledger:
            ledger.write(json.dumps(record) + "\n")
        return True, before


def refresh(reservation: Path | None) -> None:
    """Mark a reservation as belonging to a live job (decode jobs call it as they write)."""
    if reservation is not None:
        with contextlib.suppress(OSError):
            os.utime(reservation)


def budget_bytes(decoded_budget_gb: float | None) -> int | None:
    """Config ``inference.decoded_budget_gb`` in bytes (``None``: no cap)."""
    return None if decoded_budget_gb is None else int(float(decoded_budget_gb) * BYTES_PER_GB)
