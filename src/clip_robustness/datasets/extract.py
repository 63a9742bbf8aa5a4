"""Extracting archives so that an interrupted extraction is never mistaken for a complete one.

An archive is extracted into a hidden temporary folder beside its destination, renamed to
``data/extracted/{archive}/`` when every member is out, and only then is the completion marker
``data/extracted/{archive}.complete`` written (atomically). Downstream steps trust the folder only
when the marker exists; a rerun removes a marker-less folder and any leftover temporary folder.

The marker records the archive's size, modification time and sha256 (when known): the workflow
drops a marker whose archive is gone or changed (:func:`marker_is_current`), so the next run extracts
again; an archive whose modification time alone changed (a moved study) is hashed once and kept when its
sha256 is the recorded one. An extraction succeeds only when the tool reports success (``unzip`` exit status 0) and every
member of the archive is on disk: a wrong password (``unzip`` skips every file and exits 1) or a short
extraction fails, naming the archive, and leaves no marker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from clip_robustness.datasets.download import file_digests, verified_record_path, verify_stored_archive
from clip_robustness.datasets.errors import ExtractionError, UnsafeArchiveError
from clip_robustness.datasets.registry import ArchiveEntry
from clip_robustness.names import VERIFIED_DIR

log = logging.getLogger(__name__)


def archive_format(path: str | Path) -> str:
    """``"zip"`` or ``"tar"`` (plain or compressed: ``.tar``, ``.tar.gz``, ``.tgz``), from the file name."""
    name = Path(path).name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    raise ExtractionError(f"archive {path}: unknown format (expected .zip, .tar, .tar.gz or .tgz)")


def _extract_tar(archive: Path, into: Path) -> int:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()  # reads the whole index
        # tarfile stops silently at a truncated header: require the end-of-archive block (512 zero bytes)
        tar.fileobj.seek(tar.offset)
        end = tar.fileobj.read(tarfile.BLOCKSIZE)
        if len(end) != tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError(f"no end-of-archive block after member {members[-1].name if members else '-'!r}")
        try:
            tar.extractall(into, members=members, filter="data")
        except tarfile.FilterError as err:
            raise UnsafeArchiveError(
                f"archive {archive} has a member that would be written outside its folder or is not a plain file "
                f"or folder ({type(err).__name__}: {err}); it was refused and nothing was extracted. The archive reads "
                "fine but is unsafe as published (or was replaced): check where it came from."
            ) from None
    return len({m.name.rstrip("/") for m in members if not m.isdir()})


def _extract_zip(archive: Path, into: Path, password: str | None) -> int:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        encrypted = any(info.flag_bits & 0x1 for info in infos)
        unzip = shutil.which("unzip")
        if encrypted and unzip:  # Python's ZipCrypto is pure Python: far too slow for ObjectNet's ~190 GB
            if password is None:
                raise ExtractionError(f"archive {archive} is password-protected and the registry gives no password")
            run = subprocess.run(
                [unzip, "-q", "-o", "-P", password, str(archive), "-d", str(into)], capture_output=True, text=True
            )
            if run.returncode != 0:  # 1 is "warnings", but a wrong password is also 1: every file skipped
                output = (run.stderr.strip() or run.stdout.strip())[-500:]
                raise ExtractionError(
                    f"unzip failed on archive {archive} (exit status {run.returncode}; {_count_files(into)} of "
                    f"{_zip_members(infos)} files extracted): {output}. A wrong password makes unzip skip every "
                    f"file: check the password of {archive.name} in the dataset registry. No marker was written."
                )
        else:
            try:
                zf.extractall(into, pwd=password.encode() if password else None)
            except RuntimeError as err:  # zipfile: "Bad password for file ..."
                raise ExtractionError(
                    f"could not extract archive {archive}: {err}. Check the password of "
                    f"{archive.name} in the dataset registry. No marker was written."
                ) from None
    return _zip_members(infos)


def _zip_members(infos: list[zipfile.ZipInfo]) -> int:
    return len({info.filename.rstrip("/") for info in infos if not info.is_dir()})


def _count_files(folder: Path) -> int:
    """Files and links below ``folder`` (what an extraction put there)."""
    return sum(len(files) + sum(os.path.islink(os.path.join(d, n)) for n in dirs) for d, dirs, files in os.walk(folder))


class CorruptArchiveError(ExtractionError):
    """The archive's bytes cannot be read as the archive they claim to be (``path``: the archive)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def marker_is_current(marker: str | Path, archive: str | Path) -> bool:
    """False when ``marker``'s extraction no longer matches ``archive``: the archive is gone, its size differs from
    the recorded one, or its bytes differ from the recorded sha256. Markers written before sizes were recorded are
    trusted.

    A study moved with ``tar``, ``rsync`` or ``cp -r`` keeps every archive's bytes but not its exact modification
    time. An archive whose size matches but whose mtime differs is therefore hashed once: the same sha256 as the
    marker's refreshes the marker (:func:`refresh_marker`: the new mtime is recorded, so the next run costs one
    ``stat``) and the extraction is kept; another sha256, or a marker without one, is not current.
    """
    try:
        record = json.loads(Path(marker).read_text())
    except (OSError, ValueError):
        return False
    if "archive_size_bytes" not in record:
        return True
    try:
        stat = Path(archive).stat()
    except FileNotFoundError:
        return False
    if stat.st_size != record["archive_size_bytes"]:
        return False
    if stat.st_mtime_ns == record["archive_mtime_ns"]:
        return True
    if not record.get("archive_sha256"):
        return False
    log.info("%s: modification time changed since extraction; hashing it once", archive)
    if file_digests(archive).sha256 != record["archive_sha256"]:
        return False
    refresh_marker(marker, record, stat.st_mtime_ns)
    return True


def refresh_marker(marker: str | Path, record: dict, archive_mtime_ns: int) -> None:
    """Rewrite ``marker`` (atomically) with the archive's new modification time, the archive known unchanged; the
    marker keeps its own modification time (the extraction is the same one), so nothing downstream is replanned."""
    marker = Path(marker)
    before = marker.stat()
    tmp_marker = marker.with_name(marker.name + ".tmp")
    tmp_marker.write_text(json.dumps({**record, "archive_mtime_ns": archive_mtime_ns}) + "\n")
    os.utime(tmp_marker, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same extraction: nothing downstream reruns
    os.replace(tmp_marker, marker)
    log.info("%s: the archive is unchanged; the marker records its new modification time", marker)


def extract_archive(
    archive: str | Path,
    dest_dir: str | Path,
    marker: str | Path,
    *,
    password: str | None = None,
    archive_sha256: str | None = None,
) -> Path:
    """Extract ``archive`` into ``dest_dir`` and write ``marker`` last; return ``dest_dir``.

    ``password``: for password-protected zips (ObjectNet). ``archive_sha256``: the archive's verified sha256,
    recorded in the marker. Raises :class:`ExtractionError` naming the archive when the tool fails (any
    ``unzip`` exit status but 0), fewer files than the archive's members come out,
    :class:`CorruptArchiveError` when it is truncated or corrupt, :class:`UnsafeArchiveError` when a member
    would land outside the folder; nothing is left behind then (no folder, no marker).
    """
    archive, dest_dir, marker = Path(archive), Path(dest_dir), Path(marker)
    fmt = archive_format(archive)
    marker.unlink(missing_ok=True)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest_dir.parent.glob(f".{dest_dir.name}.partial-*"):
        log.info("removing the leftover of an interrupted extraction: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = dest_dir.parent / f".{dest_dir.name}.partial-{os.getpid()}"
    tmp.mkdir()
    log.info("extracting %s into %s", archive, tmp)
    n_files = _extract_all_or_nothing(archive, fmt, tmp, password)
    if dest_dir.exists():
        log.info("replacing the incomplete extraction %s", dest_dir)
        shutil.rmtree(dest_dir)
    os.rename(tmp, dest_dir)
    _write_marker(marker, archive, dest_dir, n_files, archive_sha256)
    log.info("extracted %d files of %s into %s", n_files, archive.name, dest_dir)
    return dest_dir


def _extract_all_or_nothing(archive: Path, fmt: str, tmp: Path, password: str | None) -> int:
    """Extract ``archive`` into ``tmp`` and return its number of files; on any failure remove ``tmp`` and raise."""
    try:
        n_files = _extract_tar(archive, tmp) if fmt == "tar" else _extract_zip(archive, tmp, password)
    except ExtractionError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except RuntimeError as err:  # zipfile raises it for encrypted members without a password
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExtractionError(f"could not extract archive {archive}: {err}. No marker was written.") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CorruptArchiveError(
            f"could not extract archive {archive}: {type(err).__name__}: {err}. The archive is truncated or corrupt.",
            archive,
        ) from None
    on_disk = _count_files(tmp)
    if on_disk < n_files:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExtractionError(
            f"archive {archive}: only {on_disk} of its {n_files} files were extracted; "
            "nothing was kept and no marker was written."
        )
    return n_files


def _write_marker(marker: Path, archive: Path, dest_dir: Path, n_files: int, archive_sha256: str | None) -> None:
    """Write the completion ``marker`` (atomically) recording the archive's size, mtime and sha256."""
    tmp_marker = marker.with_name(marker.name + ".tmp")
    stat = archive.stat()
    record = {
        "archive": archive.name,
        "folder": str(dest_dir),
        "n_files": n_files,
        "archive_size_bytes": stat.st_size,
        "archive_mtime_ns": stat.st_mtime_ns,
        "archive_sha256": archive_sha256,
    }
    tmp_marker.write_text(json.dumps(record) + "\n")
    os.replace(tmp_marker, marker)


def extract_verified_archive(
    archive: str | Path,
    entry: ArchiveEntry,
    dest_dir: str | Path,
    marker: str | Path,
    *,
    pinned_path: str | Path,
    rejected_dir: str | Path,
    verified_dir: str | Path = VERIFIED_DIR,
    datasets: Sequence[str] = (),
) -> Path:
    """Verify ``archive`` (:func:`~clip_robustness.datasets.download.verify_stored_archive`), then extract it
    (:func:`extract_archive`); the rule ``extract_archive``.

    The marker is removed first, so a failure at any step leaves none. An archive that verifies but cannot
    be read is moved into ``rejected_dir`` too (a link to a user's own file is left alone): the next run of
    the same command downloads it again.
    """
    archive, marker = Path(archive), Path(marker)
    marker.unlink(missing_ok=True)
    sha256 = verify_stored_archive(
        archive, entry, pinned_path=pinned_path, rejected_dir=rejected_dir, verified_dir=verified_dir, datasets=datasets
    )
    try:
        return extract_archive(archive, dest_dir, marker, password=entry.password, archive_sha256=sha256)
    except CorruptArchiveError as err:
        if archive.is_symlink():
            raise ExtractionError(
                f"{err} It is your own file ({archive.resolve()}), left where it is: replace it, "
                "then run the same command again."
            ) from None
        Path(rejected_dir).mkdir(parents=True, exist_ok=True)
        moved = Path(rejected_dir) / f"{archive.name}.unreadable-{sha256[:16]}"
        shutil.move(archive, moved)
        verified_record_path(entry.name, verified_dir).unlink(missing_ok=True)
        raise ExtractionError(
            f"{err} It matched its checksum, so the damage is in the file as published or on this disk. It was moved "
            f"aside to {moved}: run the same command again to download it again. If a fresh download fails the same "
            f"way, use a mirror (downloads.url_overrides[{entry.name!r}])."
        ) from None
