"""What every run checks before Snakemake plans: each intermediate file is judged by the content identity it records,
not by its exact modification time, and a file whose recorded identity no longer matches the configuration is
dropped, whatever ``.snakemake/`` holds.

Snakemake reruns a job whose input is newer than its oldest output, or whose script is newer than an output. A study
moved with ``cp -r`` (fresh, arbitrary modification times) or opened from a fresh clone (scripts newer than every
result) would therefore replan extractions, manifests, decodes and logits jobs whose results are exactly right. So,
before planning, the workflow (``clip_robustness.logits.startup.StartUp.before_planning``, from the ``Snakefile``):

1. drops each extraction marker whose archive is gone or whose bytes changed (an archive whose size matches but whose
   mtime differs is hashed once: :func:`clip_robustness.datasets.extract.marker_is_current`);
2. drops each manifest whose recorded source (root folder, archives' sha256, registry entry, devkit, subset) differs
   from the configured one (:func:`clip_robustness.datasets.workflow.drop_changed_manifests`);
3. drops each decoded array whose sidecar names another manifest or geometry (:func:`drop_stale_decoded`), and each
   zero-shot head built for another model or prompt set (:func:`drop_stale_heads`);
4. moves aside each logits file whose metadata is stale (:mod:`clip_robustness.logits.check`);
5. drops what was computed from a dropped manifest or logits file, so that any target replans it
   (:func:`outdate_results`): a changed manifest's decoded arrays and logits, the metric tables of the models
   concerned, and what was computed from those (the metrics table over models, figures, tables, findings, QC, report
   cards);
6. brings the modification time of every file judged current forward to that of its newest input and of its rule's
   script (:func:`bring_forward`), so Snakemake's timestamp comparison agrees with the content check.

A dropped file is missing, so Snakemake rebuilds it in the same run. Snakemake replans a missing intermediate file only
for a job that runs anyway, though: with the default target every manifest and logits file is a target, but with an
explicit one (``snakemake results/metrics/metrics.parquet``, a figure) a dropped manifest whose consumers are still on
disk would be left missing and the old results kept ("Nothing to be done"). Step 5 leaves none of those consumers on
disk, so whatever the target, its job finds its inputs missing and every job back to the dropped file is replanned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: A file brought forward past its rule's script ends up this much newer than it (Snakemake: output newer than script).
STEP_NS = 1_000_000


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB chunks (also the shared cache's checksums:
    :mod:`clip_robustness.workflow.share`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def bring_forward(
    outputs: Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike],
    script: str | os.PathLike | None = None,
    workdir: str | os.PathLike = ".",
) -> list[Path]:
    """Make every existing file of ``outputs`` (a job's outputs and benchmark file) at least as new as every existing
    file of ``inputs`` and newer than its rule's ``script``, Snakemake's two timestamp rules; return the files whose
    modification time was changed. Files already in that order (a study moved with ``tar``: whole seconds, ties
    included) are left alone.

    Call it only on outputs whose content was checked current: it is what makes Snakemake, which compares
    timestamps, agree with that check after a move (``cp -r``, ``rsync`` without ``-t``, a fresh clone)."""
    workdir = Path(workdir)
    newest = max((t for t in (_mtime_ns(workdir / s) for s in inputs) if t is not None), default=0)
    script_mtime = _mtime_ns(workdir / script) if script is not None else None
    target = max(newest, 0 if script_mtime is None else script_mtime + STEP_NS)
    moved = []
    for output in outputs:
        path = workdir / output
        mtime = _mtime_ns(path)
        if mtime is None or path.is_symlink():
            continue
        if mtime < newest or (script_mtime is not None and mtime <= script_mtime):
            os.utime(path, ns=(path.stat().st_atime_ns, target))
            moved.append(path)
    return moved


# ----------------------------------------------------------------------------- what a dropped file outdates


def outdate_results(
    model_tables: Iterable[str | os.PathLike], results: Iterable[str | os.PathLike], workdir: str | os.PathLike = "."
) -> list[str]:
    """Call it when a manifest or logits file was dropped: remove each existing per-model metric table of
    ``model_tables`` (those of the models whose tables read the dropped file) and each existing file of ``results``
    (everything computed from the per-model tables: the metrics table over models, figures, tables, findings, QC,
    report cards); return the warnings. Snakemake replans a missing file only for a job that runs anyway, so only
    files that are missing make every target, not only the default one, replan the chain back to the dropped file."""
    messages = [
        f"{table}: computed from a dropped manifest or logits file; this run computes it again"
        for table in drop_files(model_tables, workdir)
    ]
    removed = drop_files(results, workdir)
    if removed:
        shown = ", ".join(removed[:4]) + (f" and {len(removed) - 4} more" if len(removed) > 4 else "")
        messages.append(
            f"{len(removed)} file(s) computed from those metric tables removed ({shown}); any target "
            "that reads them computes them again"
        )
    return messages


def drop_files(paths: Iterable[str | os.PathLike], workdir: str | os.PathLike = ".") -> list[str]:
    """Remove each existing file of ``paths``; return those removed (as given)."""
    removed = []
    for path in paths:
        full = Path(workdir) / path
        if full.is_file() or full.is_symlink():
            full.unlink()
            removed.append(str(path))
    return removed


# ----------------------------------------------------------------------------- zero-shot heads


class _HeadUnpickler(pickle.Unpickler):
    """Reads the plain fields of a ``torch.save``d head without importing torch: tensors become ``None``."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in ("torch", "numpy", "collections"):
            if (module, name) == ("collections", "OrderedDict"):
                from collections import OrderedDict

                return OrderedDict
            return _Placeholder
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid: Any) -> None:
        return None


class _Placeholder:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __setstate__(self, state: Any) -> None:
        pass


def head_identity(path: str | os.PathLike) -> dict[str, str] | None:
    """``{"model_id", "prompt_set"}`` recorded in a zero-shot head (results/heads/{model}.pt, written by
    :func:`clip_robustness.models.zero_shot.save_head`), read without torch; ``None`` when it cannot be read."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            data = _HeadUnpickler(archive.open(name)).load()
    except (
        OSError,
        StopIteration,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        TypeError,
        ValueError,
    ):
        return None
    if not isinstance(data, Mapping) or "model_id" not in data or "prompt_set" not in data:
        return None
    return {"model_id": str(data["model_id"]), "prompt_set": str(data["prompt_set"])}


def drop_stale_heads(
    heads: Mapping[str, str | os.PathLike], prompt_set: str, workdir: str | os.PathLike = "."
) -> list[str]:
    """Remove each existing zero-shot head (``heads``: model id -> path) that records another model or prompt set
    (config ``zero_shot.prompt_set``), or cannot be read; return the warnings. The run then rebuilds it, and with it
    that model's logits."""
    messages = []
    for model, head in heads.items():
        path = Path(workdir) / head
        if not path.is_file():
            continue
        identity = head_identity(path)
        expected = {"model_id": model, "prompt_set": prompt_set}
        if identity == expected:
            continue
        found = (
            "unreadable"
            if identity is None
            else f"model {identity['model_id']!r}, prompt set {identity['prompt_set']!r}"
        )
        path.unlink()
        messages.append(
            f"{head}: zero-shot head of {found}, the study needs model {model!r} with prompt set "
            f"{prompt_set!r} (config zero_shot.prompt_set); this run builds it again, and that model's logits"
        )
    return messages


# ----------------------------------------------------------------------------- decoded arrays


def drop_stale_decoded(
    arrays: Iterable[tuple[str, str, str]], manifest_hashes: Mapping[str, str | None], workdir: str | os.PathLike = "."
) -> list[str]:
    """Remove each existing decoded array (``arrays``: (dataset, geometry key, path of the ``.npy``)) whose JSON sidecar
    is missing, unreadable, or records another geometry, dataset or manifest hash than the current manifest's
    (``manifest_hashes``: dataset -> hash, ``None`` when the manifest is missing: then nothing is judged); return the
    warnings. The run then decodes that dataset again."""
    messages = []
    for dataset, key, npy in arrays:
        npy_path = Path(workdir) / npy
        sidecar = npy_path.with_suffix(".json")
        if not npy_path.exists() and not sidecar.exists():
            continue
        expected_hash = manifest_hashes.get(dataset)
        if expected_hash is None:
            continue
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            record = None
        if (
            isinstance(record, dict)
            and npy_path.exists()
            and record.get("key") == key
            and record.get("dataset") == dataset
            and record.get("manifest_hash") == expected_hash
        ):
            continue
        for path in (npy_path, sidecar):
            path.unlink(missing_ok=True)
        messages.append(
            f"{npy}: decoded for another manifest or geometry than data/manifests/{dataset}.parquet "
            f"(or its sidecar is missing); this run decodes it again"
        )
    return messages


# ----------------------------------------------------------------------------- weights records


def weights_record_is_current(
    record: str | os.PathLike, weights_files: Iterable[str | os.PathLike], workdir: str | os.PathLike = "."
) -> bool:
    """True when the weights record (``data/weights/{model}.json``) describes the local weights files as they are:
    one not newer than the record is taken as recorded (Snakemake's own rule), a newer one of the recorded size is
    hashed once and must have the recorded sha256. False when the record is missing or unreadable."""
    workdir = Path(workdir)
    record_path = workdir / record
    try:
        files = {Path(f["file"]).resolve(): f for f in json.loads(record_path.read_text()).get("files", [])}
        record_mtime = record_path.stat().st_mtime_ns
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    for weights in weights_files:
        path = (workdir / weights).resolve()
        if not path.exists() or path.stat().st_mtime_ns <= record_mtime:
            continue
        recorded = files.get(path)
        if recorded is None or path.stat().st_size != recorded.get("size"):
            return False
        if sha256_file(path) != recorded.get("sha256"):
            return False
    return True


def older_than(
    outputs: Iterable[str | os.PathLike], sources: Iterable[str | os.PathLike], workdir: str | os.PathLike = "."
) -> list[Path]:
    """The existing files of ``outputs`` not newer than the newest existing file of ``sources``."""
    workdir = Path(workdir)
    newest = max((t for t in (_mtime_ns(workdir / s) for s in sources) if t is not None), default=None)
    if newest is None:
        return []
    return [workdir / o for o in outputs if (t := _mtime_ns(workdir / o)) is not None and t <= newest]


def computed_with(logits_files: Iterable[str | os.PathLike], identity: list[str] | None) -> bool:
    """True when every file of ``logits_files`` records ``weights_sha256`` equal to ``identity`` (the sha256 of the
    model's weights files now: :func:`clip_robustness.logits.cache.weights_identity`); reads only their footers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if identity is None:
        return False
    for path in logits_files:
        try:
            raw = (pq.read_schema(path).metadata or {}).get(b"clip_robustness")
            if raw is None or json.loads(raw).get("weights_sha256") != identity:
                return False
        except (OSError, pa.ArrowException, ValueError, AttributeError):
            return False
    return True
