"""Obtaining archives: HTTP(S)/file downloads with bounded retries, resume, and verified checksums.

Every archive ends up at ``data/archives/{archive}`` only after its bytes were verified: the
registry's sha256 (and md5, and size, when given), or, where none is published, the sha256 pinned in
``data/checksums/pinned.tsv`` at the first download (and enforced from then on). A file whose bytes
do not match is moved to ``data/archives/rejected/`` (never deleted, never used) and the run stops
naming the dataset, URL and both hashes. A download goes to ``{archive}.part`` first (resumed with an
HTTP Range request where the server allows) and is renamed into place last.

Archives are verified again before every use (:func:`verify_stored_archive`, called by the extraction):
a verified download writes ``data/checksums/verified/{archive}.json`` (sha256, size, modification time);
an archive whose size or modification time no longer matches that record is hashed again and, on a
mismatch, moved aside like a bad download, so the next run downloads it again.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip_robustness import __version__
from clip_robustness.datasets.errors import ChecksumMismatchError, DownloadError, MissingUserArchiveError
from clip_robustness.datasets.registry import ArchiveEntry
from clip_robustness.names import USER_SUPPLIED_DIR, VERIFIED_DIR
from clip_robustness.workflow.io import atomic_path

log = logging.getLogger(__name__)

#: Where a user puts archives the pipeline never fetches (ImageNet val), unless
#: ``downloads.local_archives`` points elsewhere.
#: Where a verified archive's sha256, size and modification time are recorded (one JSON file per archive).
PINNED_HEADER = "archive\tsha256\tsize_bytes\turl\tpinned_at\n"
_CHUNK = 1 << 20
_PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}


@dataclass(frozen=True)
class Digests:
    """Hex digests and size (bytes) of one file."""

    sha256: str
    md5: str
    size_bytes: int


def file_digests(path: str | Path) -> Digests:
    """sha256 and md5 (lower-case hex) and size of ``path``, in one read."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return Digests(sha.hexdigest(), md5.hexdigest(), size)


def read_pinned(pinned_path: str | Path) -> dict[str, str]:
    """archive name -> sha256 pinned at its first download (empty when the file does not exist)."""
    pinned_path = Path(pinned_path)
    if not pinned_path.exists():
        return {}
    pins: dict[str, str] = {}
    for number, line in enumerate(pinned_path.read_text().splitlines()[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or len(fields[1]) != 64:
            raise DownloadError(f"{pinned_path}, line {number}: expected 'archive<TAB>sha256<TAB>...', got {line!r}")
        pins.setdefault(fields[0], fields[1])  # the first pin is the one enforced
    return pins


def pin_sha256(pinned_path: str | Path, archive: str, digests: Digests, url: str) -> str:
    """Record ``archive``'s sha256 unless already pinned (under a file lock); return the pinned value."""
    pinned_path = Path(pinned_path)
    pinned_path.parent.mkdir(parents=True, exist_ok=True)
    with open(pinned_path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            if not f.read(1):
                f.write(PINNED_HEADER)
            existing = read_pinned(pinned_path)
            if archive in existing:
                return existing[archive]
            stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            f.write(f"{archive}\t{digests.sha256}\t{digests.size_bytes}\t{url}\t{stamp}\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    log.info("pinned sha256 %s for %s in %s", digests.sha256, archive, pinned_path)
    return digests.sha256


def _reject(path: Path, rejected_dir: Path, archive: str, digests: Digests) -> Path:
    rejected_dir.mkdir(parents=True, exist_ok=True)
    target = rejected_dir / f"{archive}.sha256-{digests.sha256[:16]}"
    shutil.move(path, target)
    return target


def verify_archive(
    path: str | Path,
    entry: ArchiveEntry,
    *,
    source: str,
    pinned_path: str | Path,
    rejected_dir: str | Path,
    datasets: Sequence[str] = (),
    move_aside: bool = True,
    advice: str | None = None,
) -> Digests:
    """Check ``path`` against ``entry``'s size, sha256 (registry, else pinned) and md5.

    On a match with no published or pinned sha256, pins it. On a mismatch the file is moved into
    ``rejected_dir`` (when ``move_aside``; a user's own file is left where it is) and
    :class:`ChecksumMismatchError` names the archive, datasets, ``source`` (URL or local path) and the
    expected and actual values, then ``advice`` (default: the download may be corrupt; retry or use a mirror).
    """
    path, rejected_dir = Path(path), Path(rejected_dir)
    digests = file_digests(path)
    expected_sha, origin = entry.sha256, "the dataset registry"
    if expected_sha is None:
        expected_sha = read_pinned(pinned_path).get(entry.name)
        origin = f"pinned at first download in {pinned_path}"
    problems = []
    if entry.size_bytes is not None and digests.size_bytes != entry.size_bytes:
        problems.append(f"size {digests.size_bytes} bytes, expected {entry.size_bytes}")
    if expected_sha is not None and digests.sha256 != expected_sha:
        problems.append(f"sha256 expected {expected_sha} ({origin}), actual {digests.sha256}")
    if entry.md5 is not None and digests.md5 != entry.md5:
        problems.append(f"md5 expected {entry.md5} (dataset registry), actual {digests.md5}")
    if problems:
        if expected_sha is None:
            problems.append(f"actual sha256 {digests.sha256} (none published or pinned)")
        kept = (
            f"The file was moved aside to {_reject(path, rejected_dir, entry.name, digests)}"
            if move_aside
            else f"The file {path} was left where it is"
        )
        raise ChecksumMismatchError(
            f"checksum mismatch for archive {entry.name} (dataset(s) {', '.join(datasets) or '-'}) from {source}: "
            f"{'; '.join(problems)}. {kept} and will not be used. "
            + (
                advice
                or f"The download may be corrupt or the upstream file may have changed: retry, or use a mirror "
                f"(downloads.url_overrides[{entry.name!r}])."
            )
        )
    if expected_sha is None:
        pin_sha256(pinned_path, entry.name, digests, source)
    return digests


def verified_record_path(archive: str, verified_dir: str | Path = VERIFIED_DIR) -> Path:
    """``data/checksums/verified/{archive}.json``."""
    return Path(verified_dir) / f"{archive}.json"


def record_verified(path: str | Path, digests: Digests, verified_dir: str | Path = VERIFIED_DIR) -> Path:
    """Record that the file at ``path`` (an archive, or a link to one) was verified: its sha256, size and
    modification time, so later uses can trust it without hashing it again while these stay the same."""
    stat = Path(path).stat()
    record = {
        "sha256": digests.sha256,
        "size_bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "verified_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    target = verified_record_path(Path(path).name, verified_dir)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(record) + "\n")
    return target


def verify_stored_archive(
    path: str | Path,
    entry: ArchiveEntry,
    *,
    pinned_path: str | Path,
    rejected_dir: str | Path,
    verified_dir: str | Path = VERIFIED_DIR,
    datasets: Sequence[str] = (),
) -> str:
    """Check ``data/archives/{archive}`` before it is used and return its sha256.

    Trusted without reading it when its size and modification time are those recorded by the last
    verification; otherwise hashed and checked against the registry (or pinned) checksums. On a mismatch a
    downloaded archive is moved into ``rejected_dir`` (a link to a user's own file is left alone) and
    :class:`ChecksumMismatchError` names the archive and both hashes; the next run downloads it again.
    """
    path = Path(path)
    record_path = verified_record_path(entry.name, verified_dir)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = None
    stat = path.stat()
    if record and record.get("size_bytes") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
        return str(record["sha256"])
    record_path.unlink(missing_ok=True)
    log.info("archive %s changed since it was verified (or was never verified): checking its checksum", path)
    mine = path.is_symlink()
    advice = (
        f"It is your own file (downloads.local_archives or {USER_SUPPLIED_DIR}/): replace it, then run the same "
        "command again."
        if mine
        else "The archive changed after it was downloaded and verified. Run the same "
        "command again: it downloads and verifies the archive again, then extracts it."
    )
    digests = verify_archive(
        path,
        entry,
        source=str(path),
        pinned_path=pinned_path,
        rejected_dir=rejected_dir,
        datasets=datasets,
        move_aside=not mine,
        advice=advice,
    )
    record_verified(path, digests, verified_dir)
    return digests.sha256


class _Retriable(Exception):
    pass


def _attempt(url: str, part: Path, timeout_s: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"clip-robustness/{__version__} (python urllib)"}
    if offset and url.startswith(("http://", "https://")):
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = getattr(response, "status", None) or 200
            length = response.headers.get("Content-Length")
            if status == 206:
                mode, expected = "ab", (offset + int(length)) if length is not None else None
                log.info("resuming %s at byte %d", url, offset)
            else:
                mode, expected = "wb", int(length) if length is not None else None
            with open(part, mode) as f:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
    except urllib.error.HTTPError as err:
        if err.code in _PERMANENT_HTTP:
            raise DownloadError(f"HTTP {err.code} {err.reason}") from None
        raise _Retriable(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", None) or err
        if isinstance(err, urllib.error.URLError) and isinstance(reason, FileNotFoundError):
            raise DownloadError(f"no such file: {reason.filename}") from None
        raise _Retriable(f"{type(err).__name__}: {reason}") from None
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise _Retriable(f"truncated: got {size} of {expected} bytes")


def fetch(url: str, part: Path, *, retries: int, timeout_s: float, retry_delay_s: float) -> None:
    """Download ``url`` into ``part``, making at most ``retries`` attempts (>= 1), waiting
    ``retry_delay_s * 2**k`` seconds between them. Raises :class:`DownloadError` with the last reason."""
    for attempt in range(1, max(1, retries) + 1):
        try:
            _attempt(url, part, timeout_s)
            return
        except _Retriable as err:
            log.warning("attempt %d/%d of %s failed: %s", attempt, retries, url, err)
            if attempt == retries:
                raise DownloadError(f"{err} (after {attempt} attempt(s))") from None
            time.sleep(retry_delay_s * 2 ** (attempt - 1))


def missing_user_archive_message(
    entry: ArchiveEntry, datasets: Sequence[str], user_dir: Path = Path(USER_SUPPLIED_DIR)
) -> str:
    """What to do when a user-supplied archive (ImageNet val) is missing: the exact file and where."""
    size = f", {entry.size_bytes:,} bytes" if entry.size_bytes else ""
    checksum = f", sha256 {entry.sha256}" if entry.sha256 else ""
    where = f" (from {entry.url}, which needs an account)" if entry.url else ""
    return (
        f"dataset(s) {', '.join(datasets) or '-'} need the archive {entry.name}{size}{checksum}, which this pipeline "
        f"never downloads itself{where}. Put the file at {user_dir / entry.name} "
        f"(folder {user_dir}/ under the workflow directory), or set downloads.local_archives: "
        f"{{{entry.name}: /path/to/{entry.name}}}, or point downloads.local_folders at an extracted copy "
        f"(e.g. {{{datasets[0] if datasets else 'imagenet_val'}: /path/to/folder}}) in your config."
    )


# Longer than 60 lines: the ways to obtain an archive tried in order (user folder, local copy, user-supplied, each URL
# with resume), one message each.
def obtain_archive(
    entry: ArchiveEntry,
    dest: str | Path,
    *,
    pinned_path: str | Path,
    rejected_dir: str | Path,
    local_path: str | Path | None = None,
    user_dir: str | Path = USER_SUPPLIED_DIR,
    retries: int = 3,
    timeout_s: float = 120.0,
    retry_delay_s: float = 2.0,
    datasets: Sequence[str] = (),
    verified_dir: str | Path = VERIFIED_DIR,
) -> Path:
    """Put a verified copy of archive ``entry`` at ``dest`` and return ``dest``; record the verification
    (:func:`record_verified`) in ``verified_dir``.

    ``local_path`` (config ``downloads.local_archives``): a file the user already has; it is
    verified and then symlinked (never copied, moved or deleted). A user-supplied archive (ImageNet val)
    is never downloaded: it is taken from ``local_path`` or ``user_dir / entry.name``, else
    :class:`MissingUserArchiveError` says what to put where. Otherwise the archive's URLs are tried in
    order, each with at most ``retries`` attempts of ``timeout_s`` seconds of socket inactivity.
    """
    dest, user_dir = Path(dest), Path(user_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if local_path is None and entry.user_supplied and (user_dir / entry.name).exists():
        local_path = user_dir / entry.name
    if local_path is not None:
        local_path = Path(local_path).expanduser().absolute()
        if not local_path.is_file():
            raise MissingUserArchiveError(
                f"downloads.local_archives[{entry.name!r}] is {local_path}, which is not a file. "
                + missing_user_archive_message(entry, datasets, user_dir)
            )
        digests = verify_archive(
            local_path,
            entry,
            source=str(local_path),
            pinned_path=pinned_path,
            rejected_dir=rejected_dir,
            datasets=datasets,
            move_aside=False,
        )
        tmp = dest.with_name(dest.name + ".link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(local_path)
        os.replace(tmp, dest)
        record_verified(dest, digests, verified_dir)
        log.info("linked verified local archive %s -> %s", dest, local_path)
        return dest
    if entry.user_supplied:
        raise MissingUserArchiveError(missing_user_archive_message(entry, datasets, user_dir))

    part = dest.with_name(dest.name + ".part")
    failures = []
    for url in entry.urls:
        log.info("downloading %s from %s", entry.name, url)
        try:
            fetch(url, part, retries=retries, timeout_s=timeout_s, retry_delay_s=retry_delay_s)
        except DownloadError as err:
            failures.append(f"{url}: {err}")
            continue
        digests = verify_archive(
            part, entry, source=url, pinned_path=pinned_path, rejected_dir=rejected_dir, datasets=datasets
        )
        os.replace(part, dest)
        record_verified(dest, digests, verified_dir)
        log.info("archive %s verified and in place at %s", entry.name, dest)
        return dest
    kept = f" The partial file {part} is kept and resumed next time." if part.exists() and part.stat().st_size else ""
    if part.exists() and not part.stat().st_size:
        part.unlink()
    raise DownloadError(
        f"could not download archive {entry.name} (dataset(s) {', '.join(datasets) or '-'}): "
        + "; ".join(failures)
        + f".{kept} Set downloads.url_overrides[{entry.name!r}] to a mirror, or download the file yourself and "
        f"set downloads.local_archives[{entry.name!r}] to its path."
    )


#: The keyword arguments of :func:`obtain_archive` that the ``download_archive`` rule's params carry.
RULE_OPTIONS = ("pinned_path", "rejected_dir", "local_path", "user_dir", "retries", "timeout_s", "datasets")


def obtain_archive_for_rule(params: Mapping[str, Any], dest: str | Path, **overrides: Any) -> Path:
    """:func:`obtain_archive` with the ``download_archive`` rule's params
    (:func:`clip_robustness.datasets.workflow.download_params`); ``overrides`` replace or add keyword arguments."""
    options = {name: params[name] for name in RULE_OPTIONS}
    return obtain_archive(ArchiveEntry.from_dict(params["archive"]), dest, **{**options, **overrides})
