"""What the datasets rules need from the registry and the config: paths, params, parse-time checks.

The named input functions in ``workflow/rules/common.smk`` are one-line calls into this module, so
the logic is importable and tested. Paths are relative to the workflow directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from clip_robustness.datasets.download import missing_user_archive_message
from clip_robustness.datasets.errors import MissingUserArchiveError
from clip_robustness.datasets.extract import marker_is_current
from clip_robustness.datasets.manifest import dataset_root
from clip_robustness.datasets.registry import DatasetRegistry
from clip_robustness.names import (
    EXTRACTED_DIR,
    PINNED_CHECKSUMS,
    REJECTED_ARCHIVES_DIR,
    USER_SUPPLIED_DIR,
    archive_path,
    extraction_marker,
    manifest_path,
    marker_archive,
)


def download_params(registry: DatasetRegistry, archive: str, downloads: Mapping[str, Any]) -> dict[str, Any]:
    """Params of ``download_archive`` for ``archive`` (plain data; a change reruns the download)."""
    return {
        "archive": registry.archive(archive).to_dict(),
        "local_path": (downloads.get("local_archives") or {}).get(archive),
        "retries": int(downloads["retries"]),
        "timeout_s": float(downloads["timeout_s"]),
        "pinned_path": PINNED_CHECKSUMS,
        "rejected_dir": REJECTED_ARCHIVES_DIR,
        "user_dir": USER_SUPPLIED_DIR,
        "datasets": registry.datasets_using(archive),
    }


def extract_params(registry: DatasetRegistry, archive: str) -> dict[str, Any]:
    """Params of ``extract_archive``: destination folder, zip password (ObjectNet), and what verifying the
    archive before use needs (its registry entry, the pinned checksums, where a bad archive goes)."""
    return {
        "dest": str(Path(EXTRACTED_DIR) / archive),
        "password": registry.archive(archive).password,
        "archive": registry.archive(archive).to_dict(),
        "pinned_path": PINNED_CHECKSUMS,
        "rejected_dir": REJECTED_ARCHIVES_DIR,
        "datasets": registry.datasets_using(archive),
    }


def extraction_markers(
    registry: DatasetRegistry, dataset_ids: Iterable[str], downloads: Mapping[str, Any], workdir: str | Path = "."
) -> list[str]:
    """The extraction markers every manifest of ``dataset_ids`` reads (see :func:`manifest_inputs`), once each,
    in first-use order: targets of the run, so a deleted or dropped marker is extracted again."""
    markers: dict[str, None] = {}
    for dataset in dataset_ids:
        for paths in manifest_inputs(registry, dataset, downloads, workdir).values():
            markers.update(dict.fromkeys(paths))
    return list(markers)


def drop_outdated_markers(markers: Iterable[str], workdir: str | Path = ".") -> list[str]:
    """Remove each extraction marker whose archive is gone or changed since it was extracted
    (:func:`~clip_robustness.datasets.extract.marker_is_current`) and return them: the run then extracts
    those archives again (downloading and verifying them first when they are gone)."""
    workdir = Path(workdir)
    dropped = []
    for marker in markers:
        path = workdir / marker
        archive = workdir / archive_path(marker_archive(marker))
        if path.is_file() and not marker_is_current(path, archive):
            path.unlink()
            dropped.append(marker)
    return dropped


def archive_supplied(archive: str, downloads: Mapping[str, Any], workdir: str | Path = ".") -> bool:
    """True when the user has provided ``archive`` (a user-supplied one such as the ImageNet devkit):
    already in ``data/archives/``, in ``data/user_supplied/``, or named in ``downloads.local_archives``
    (a missing file there is reported by :func:`check_user_supplied_archives`)."""
    workdir = Path(workdir)
    return (
        archive in (downloads.get("local_archives") or {})
        or (workdir / archive_path(archive)).exists()
        or (workdir / USER_SUPPLIED_DIR / archive).is_file()
    )


def supplied_label_archives(
    registry: DatasetRegistry, dataset: str, downloads: Mapping[str, Any], workdir: str | Path = "."
) -> list[str]:
    """The dataset's label-only archives (the ImageNet devkit) to read: all of them when required (the
    devkit as the sole label source), else those available: supplied by the user (see
    :func:`archive_supplied`) or, for an archive that is not user-supplied, downloadable."""
    entry = registry.resolve(dataset)
    if entry.label_archives_required:
        return list(entry.label_archives)
    return [
        a
        for a in entry.label_archives
        if not registry.archive(a).user_supplied or archive_supplied(a, downloads, workdir)
    ]


def manifest_inputs(
    registry: DatasetRegistry, dataset: str, downloads: Mapping[str, Any], workdir: str | Path = "."
) -> dict[str, list[str]]:
    """Inputs of ``build_manifest``: the extraction markers of the dataset's archives (none when
    ``downloads.local_folders`` gives a folder for it), and under ``labels`` those of the label
    archives it reads (the ImageNet devkit, when supplied)."""
    inputs = {}
    if dataset not in (downloads.get("local_folders") or {}):
        inputs["extracted"] = [extraction_marker(a) for a in registry.resolve(dataset).archives]
    labels = supplied_label_archives(registry, dataset, downloads, workdir)
    if labels:
        inputs["labels"] = [extraction_marker(a) for a in labels]
    return inputs


def manifest_params(
    registry: DatasetRegistry, dataset: str, downloads: Mapping[str, Any], workdir: str | Path = "."
) -> dict[str, Any]:
    """Params of ``build_manifest``: the registry entry, the image root folder, and for an entry with a
    devkit label source ``devkit_root``: its extraction folder when supplied, else ``None``.

    The corrupt-image policy (``downloads.skip_corrupt_images``) is deliberately not a param: it changes
    nothing for a dataset without an unreadable image, so switching it must not replan every manifest
    (and with them every logits job); the rule script reads it from the config (:func:`skip_corrupt`)."""
    entry = registry.resolve(dataset)
    local = (downloads.get("local_folders") or {}).get(dataset)
    params = {
        "entry": entry.to_dict(),
        "root": str(dataset_root(entry, EXTRACTED_DIR, local)),
    }
    if entry.label_archives:  # only then, so the other datasets' params stay as they were
        supplied = supplied_label_archives(registry, dataset, downloads, workdir)
        params["devkit_root"] = str(Path(EXTRACTED_DIR) / supplied[0]) if supplied else None
    return params


def skip_corrupt(downloads: Mapping[str, Any]) -> bool:
    """Whether the manifest step leaves unreadable images out (config ``downloads.skip_corrupt_images``)."""
    return bool(downloads["skip_corrupt_images"])


def check_user_supplied_archives(
    registry: DatasetRegistry, dataset_ids: Iterable[str], downloads: Mapping[str, Any], workdir: str | Path = "."
) -> None:
    """Stop before any job if a dataset needs an archive the pipeline never fetches (ImageNet val) and
    the user has not provided it: not in ``data/archives/``, not in ``data/user_supplied/``, not in
    ``downloads.local_archives``, and no ``downloads.local_folders`` entry or existing manifest for
    the dataset. The ImageNet devkit (a label-only archive) is required only when it is the sole label
    source. Raises :class:`MissingUserArchiveError` naming the exact files and the folder."""
    workdir = Path(workdir)
    local_archives = downloads.get("local_archives") or {}
    local_folders = downloads.get("local_folders") or {}
    problems: list[str] = []
    for dataset in dataset_ids:
        manifest = workdir / manifest_path(dataset)
        if dataset in local_folders:
            folder = Path(local_folders[dataset]).expanduser()
            built_from = (_manifest_metadata(manifest) or {}).get("root") if manifest.exists() else None
            # a manifest built from this very folder needs it no more (a shared cache on another machine)
            if built_from != str(folder) and not (folder if folder.is_absolute() else workdir / folder).is_dir():
                problems.append(f"downloads.local_folders[{dataset!r}] is {folder}, which is not a folder.")
        if manifest.exists():
            continue
        dataset_entry = registry.resolve(dataset)
        names = [] if dataset in local_folders else list(dataset_entry.archives)
        # label-only archives (the ImageNet devkit): checked when required, or when named in local_archives
        names += [
            a for a in dataset_entry.label_archives if dataset_entry.label_archives_required or a in local_archives
        ]
        for name in names:
            entry = registry.archive(name)
            if not entry.user_supplied or (workdir / archive_path(name)).exists():
                continue
            if name in local_archives:
                given = Path(local_archives[name]).expanduser()
                if not (given if given.is_absolute() else workdir / given).is_file():
                    problems.append(f"downloads.local_archives[{name!r}] is {given}, which is not a file.")
                continue
            if not (workdir / USER_SUPPLIED_DIR / name).is_file():
                problems.append(missing_user_archive_message(entry, [dataset]))
    if problems:
        raise MissingUserArchiveError("Before any job runs: " + " ".join(problems))


# ----------------------------------------------------------------------------- manifest sources


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so records compare equal to what is configured."""
    return json.loads(json.dumps(value))


def marker_sha256(marker: str | Path) -> str | None:
    """The verified sha256 of the archive an extraction marker records, or ``None`` (no marker, or none recorded)."""
    try:
        return json.loads(Path(marker).read_text()).get("archive_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def manifest_source(
    params: Mapping[str, Any],
    subset: Mapping[str, Any] | None,
    markers: Iterable[str | Path],
    workdir: str | Path = ".",
) -> dict[str, Any]:
    """What a manifest is built from, recorded in its metadata as ``source``: the registry ``entry``, the image
    ``root`` folder, the ``devkit_root`` (ImageNet val with a devkit), the ImageNet-C ``subset``, and the sha256 of
    each archive extracted for it (``archives``: archive name -> sha256, from the extraction ``markers``).

    ``params``: :func:`manifest_params`; ``subset``: the rule's subset param. The rule script records it; every run
    compares it with the configured one before planning (:func:`drop_changed_manifests`)."""
    return _plain(
        {
            "entry": params["entry"],
            "root": params["root"],
            "devkit_root": params.get("devkit_root"),
            "subset": None if subset is None else dict(subset),
            "archives": {marker_archive(m): marker_sha256(Path(workdir) / m) for m in markers},
        }
    )


def source_differences(metadata: Mapping[str, Any], configured: Mapping[str, Any]) -> list[str]:
    """How a manifest's recorded source (its metadata: ``source``, or for a manifest written before sources were
    recorded ``root`` and ``registry_entry``) differs from ``configured`` (:func:`manifest_source`), in words; empty
    when it does not. An archive whose sha256 is unknown on either side (its marker is gone: it is extracted
    again, and the manifest with it) is not compared."""
    recorded = metadata.get("source")
    if not isinstance(recorded, Mapping):  # an older manifest: compare what it has
        recorded = {"root": metadata.get("root"), "entry": metadata.get("registry_entry", configured["entry"])}
    differences = []
    for key, what in (
        ("root", "image root folder"),
        ("entry", "registry entry"),
        ("devkit_root", "devkit folder"),
        ("subset", "ImageNet-C subset"),
    ):
        if key in recorded and recorded[key] != configured.get(key):
            shown = (recorded[key], configured.get(key)) if key != "entry" else ("its record", "the registry's")
            differences.append(f"{what} was {shown[0]!r}, is now {shown[1]!r}")
    archives_then, archives_now = recorded.get("archives"), configured.get("archives") or {}
    if isinstance(archives_then, Mapping):
        if set(archives_then) != set(archives_now):
            differences.append(f"archives were {sorted(archives_then)}, are now {sorted(archives_now)}")
        for name, sha in archives_now.items():
            if sha and archives_then.get(name) and archives_then[name] != sha:
                differences.append(f"archive {name} was sha256 {archives_then[name][:16]}..., is now {sha[:16]}...")
    return differences


def _manifest_metadata(path: Path) -> dict | None:
    """The ``clip_robustness`` metadata of a manifest's footer, or ``None`` when it cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        raw = (pq.read_schema(path).metadata or {}).get(b"clip_robustness")
        metadata = json.loads(raw) if raw else None
    except (OSError, pa.ArrowException, ValueError):
        return None
    return metadata if isinstance(metadata, dict) else None


def drop_changed_manifests(
    registry: DatasetRegistry,
    dataset_ids: Iterable[str],
    downloads: Mapping[str, Any],
    subset_of: Callable[[str], Mapping[str, Any] | None],
    workdir: str | Path = ".",
) -> list[str]:
    """Before planning: remove each manifest (with its skipped-images list) whose recorded source differs from the
    configured one (:func:`source_differences`), whatever ``.snakemake/`` holds; return the warnings. The run then
    builds it again, and recomputes that dataset's decoded arrays and logits (a job keeps a logits file only when it
    records the new manifest's hash). ``subset_of``: dataset id -> its ImageNet-C subset param, or ``None``."""
    workdir = Path(workdir)
    messages = []
    for dataset in dataset_ids:
        manifest = workdir / manifest_path(dataset)
        if not manifest.is_file():
            continue
        metadata = _manifest_metadata(manifest)
        if metadata is None:
            continue  # unreadable: the logits check and the readers name it
        markers = [m for paths in manifest_inputs(registry, dataset, downloads, workdir).values() for m in paths]
        configured = manifest_source(
            manifest_params(registry, dataset, downloads, workdir), subset_of(dataset), markers, workdir
        )
        differences = source_differences(metadata, configured)
        if differences:
            manifest.unlink()
            manifest.with_name(f"{dataset}.skipped.csv").unlink(missing_ok=True)
            messages.append(
                f"{manifest_path(dataset)}: its source changed ({'; '.join(differences)}); this run builds "
                f"it again and recomputes {dataset}'s decoded arrays and logits"
            )
    return messages


def bring_archives_forward(markers: Iterable[str], script: str | Path, workdir: str | Path = ".") -> list[str]:
    """Make each extracted archive of ``markers`` newer than the download rule's ``script`` (Snakemake downloads an
    archive again when its script is newer: after a fresh clone, a ``cp -r`` or an edit of the script); return the
    archives whose modification time was changed. A link to a user's own file is left alone. An archive that matched
    its marker's size and mtime before is known unchanged: its marker records the new mtime, so nothing is hashed."""
    from clip_robustness.datasets.extract import refresh_marker
    from clip_robustness.workflow.currency import bring_forward

    workdir = Path(workdir)
    moved = []
    for marker in markers:
        archive = archive_path(marker_archive(marker))
        path = workdir / archive
        if path.is_symlink() or not path.is_file():
            continue
        try:
            record = json.loads((workdir / marker).read_text())
        except (OSError, ValueError):
            record = None
        stat = path.stat()
        unchanged = (
            isinstance(record, dict)
            and record.get("archive_size_bytes") == stat.st_size
            and record.get("archive_mtime_ns") == stat.st_mtime_ns
        )
        if bring_forward([archive], [], script, workdir):
            moved.append(archive)
            if unchanged:
                refresh_marker(workdir / marker, record, path.stat().st_mtime_ns)
    return moved
