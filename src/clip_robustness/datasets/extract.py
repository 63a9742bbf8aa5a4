"""Extracting archives so that an interrupted extraction is never mistaken for a complete one.

An archive is extracted into a hidden temporary folder beside its destination, renamed to
``data/extracted/{archive}/`` when every member is out, and only then is the completion marker
``data/extracted/{archive}.complete`` written (atomically). Downstream steps trust the folder only
when the marker exists; a rerun removes a marker-less folder and any leftover temporary folder.
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
from pathlib import Path

from clip_robustness.datasets.errors import ExtractionError

log = logging.getLogger(__name__)


def archive_format(path: str | Path) -> str:
    """``"zip"`` or ``"tar"`` (plain or compressed: ``.tar``, ``.tar.gz``, ``.tgz``), from the file name."""
    name = Path(path).name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    raise ExtractionError(f"archive {path}: unknown format (expected .zip, .tar, .tar.gz or .tgz)")


def is_extracted(dest_dir: str | Path, marker: str | Path) -> bool:
    """True when ``dest_dir`` holds a complete extraction (its marker exists)."""
    return Path(marker).is_file() and Path(dest_dir).is_dir()


def _extract_tar(archive: Path, into: Path) -> int:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()  # reads the whole index
        # tarfile stops silently at a truncated header: require the end-of-archive block (512 zero bytes)
        tar.fileobj.seek(tar.offset)
        end = tar.fileobj.read(tarfile.BLOCKSIZE)
        if len(end) != tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
            raise tarfile.ReadError(f"no end-of-archive block after member {members[-1].name if members else '-'!r}")
        tar.extractall(into, members=members, filter="data")
    return sum(m.isfile() for m in members)


def _extract_zip(archive: Path, into: Path, password: str | None) -> int:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        encrypted = any(info.flag_bits & 0x1 for info in infos)
        unzip = shutil.which("unzip")
        if encrypted and unzip:  # Python's ZipCrypto is pure Python: far too slow for ObjectNet's ~190 GB
            if password is None:
                raise ExtractionError(f"archive {archive} is password-protected and the registry gives no password")
            run = subprocess.run([unzip, "-q", "-o", "-P", password, str(archive), "-d", str(into)],
                                 capture_output=True, text=True)
            if run.returncode not in (0, 1):  # 1: warnings only, every file extracted
                raise ExtractionError(f"unzip failed on {archive} (exit {run.returncode}): {run.stderr.strip()[-500:]}")
        else:
            zf.extractall(into, pwd=password.encode() if password else None)
    return sum(not info.is_dir() for info in infos)


def extract_archive(archive: str | Path, dest_dir: str | Path, marker: str | Path, *, password: str | None = None) -> Path:
    """Extract ``archive`` into ``dest_dir`` and write ``marker`` last; return ``dest_dir``.

    ``password``: for password-protected zips (ObjectNet). Raises :class:`ExtractionError` naming the
    archive when it is truncated or corrupt; nothing is left behind then (no folder, no marker).
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
    try:
        n_files = _extract_tar(archive, tmp) if fmt == "tar" else _extract_zip(archive, tmp, password)
    except ExtractionError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExtractionError(
            f"could not extract archive {archive}: {type(err).__name__}: {err}. The archive is truncated or corrupt; "
            f"delete {archive} so that it is downloaded (and verified) again."
        ) from None
    if dest_dir.exists():
        log.info("replacing the incomplete extraction %s", dest_dir)
        shutil.rmtree(dest_dir)
    os.rename(tmp, dest_dir)
    tmp_marker = marker.with_name(marker.name + ".tmp")
    tmp_marker.write_text(json.dumps({"archive": archive.name, "folder": str(dest_dir), "n_files": n_files}) + "\n")
    os.replace(tmp_marker, marker)
    log.info("extracted %d files of %s into %s", n_files, archive.name, dest_dir)
    return dest_dir
