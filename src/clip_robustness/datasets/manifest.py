"""Manifests: one row per image of a dataset, in a stable order, with its ImageNet-1k label.

``data/manifests/{dataset}.parquet`` has columns ``index`` (int32, 0..n-1), ``path`` (string,
relative to the dataset's root folder) and ``label`` (int16: ImageNet-1k class index in sorted-wnid
order, -1 for OOD sets). Its schema metadata key ``clip_robustness`` holds JSON: ``dataset``,
``title``, ``root``, ``layout``, ``manifest_hash``, ``n_images``, ``label_space`` (the
:class:`~clip_robustness.datasets.label_spaces.LabelSpace` as a JSON object), ``border_crop_px`` (pixels to crop
from each side when loading an image: ObjectNet 1), ``n_skipped`` and, for ObjectNet,
``class_mapping`` (folder -> ObjectNet class, ImageNet indices, group).

Recipes (``layout`` in the registry, :data:`LAYOUT_RECIPES`):

- ``imagenet_val``: ``ILSVRC2012_val_XXXXXXXX.JPEG`` files (flat, or in wnid folders); labels from
  the sources in the entry's ``labels_from``: the ``filename_label.csv`` that ships in the
  ``imagenet-x`` package, and/or the official devkit (:mod:`clip_robustness.datasets.devkit`) when
  it is given; every available source (and wnid folders) cross-checked.
- ``wnid_folders``: ``<wnid>/<image>``; label = the wnid's index (ImageNet-R/A/Sketch/C).
- ``class_index_folders``: ``<k>/<image>`` with k in 0..999 the class index (ImageNet-V2); the
  folders are ordered as integers (2 before 10), never as strings.
- ``objectnet``: ``images/<folder>/<image>`` with the class mapping from ``mappings/``; only images
  of classes mapped to ImageNet are listed; label = the smallest mapped ImageNet index.
- ``ood_images``: every image below the folder, recursively; label -1.
- ``cue_conflict``: ``<shape category>/<shape><n>-<texture><m>.png`` (model-vs-human's cue-conflict stimuli,
  :mod:`clip_robustness.datasets.cue_conflict`); label = the shape category's smallest ImageNet index, label space the
  categories' pooled indices; metadata ``categories`` (category -> ImageNet indices) and ``category_mapping``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clip_robustness import PIPELINE_VERSION
from clip_robustness.datasets.devkit import compare_val_labels, imagenet_val_labels_from_devkit
from clip_robustness.datasets.errors import CorruptImageError, ManifestError
from clip_robustness.datasets.label_spaces import (
    LabelSpace,
    imagenet_synsets,
    label_space_named,
    objectnet_mapping,
    package_file,
    wnid_to_index,
)
from clip_robustness.datasets.registry import LAYOUTS, DatasetEntry
from clip_robustness.names import EXTRACTED_DIR, extraction_marker, skipped_path
from clip_robustness.workflow.io import atomic_path

log = logging.getLogger(__name__)

METADATA_KEY = b"clip_robustness"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SKIPPED_COLUMNS = ["path", "reason"]
SCHEMA = pa.schema([("index", pa.int32()), ("path", pa.string()), ("label", pa.int16())])


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Manifest:
    """A dataset's manifest. ``table``: DataFrame ``index, path, label`` (see module docstring);
    ``metadata``: the decoded ``clip_robustness`` JSON."""

    table: pd.DataFrame
    metadata: dict[str, Any]

    @property
    def dataset(self) -> str:
        return str(self.metadata["dataset"])

    @property
    def root(self) -> Path:
        """Folder that ``path`` is relative to (relative roots are relative to the workflow directory)."""
        return Path(self.metadata["root"])

    @cached_property
    def label_space(self) -> LabelSpace:
        """The classes this dataset is scored on (1000 for ImageNet/V2/Sketch/C and OOD sets)."""
        return LabelSpace.from_json(json.dumps(self.metadata["label_space"]))

    @property
    def file_names(self) -> list[str]:
        """Base file name of each row (e.g. ``ILSVRC2012_val_00000001.JPEG``), in row order."""
        return [p.rsplit("/", 1)[-1] for p in self.table["path"]]

    @property
    def manifest_hash(self) -> str:
        return str(self.metadata["manifest_hash"])

    @property
    def border_crop_px(self) -> int:
        """Pixels to crop from every side of an image when loading it (ObjectNet: 1)."""
        return int(self.metadata.get("border_crop_px", 0))

    def image_path(self, row: int) -> Path:
        """Absolute-or-workdir-relative path of row ``row``'s image."""
        return self.root / self.table["path"].iat[row]

    def open_image(self, row: int) -> Image.Image:
        """Row ``row``'s image as RGB, with the dataset's border crop applied."""
        with Image.open(self.image_path(row)) as img:
            img = img.convert("RGB")
        b = self.border_crop_px
        return img.crop((b, b, img.width - b, img.height - b)) if b else img


def manifest_hash(table: pd.DataFrame) -> str:
    """sha256 (hex) of the ``path`` and ``label`` columns: of the UTF-8 text ``f"{path}\\t{label}\\n"``
    of every row, in row order. Identifies a manifest's content in the logits cache's metadata."""
    digest = hashlib.sha256()
    for path, label in zip(table["path"].tolist(), table["label"].tolist()):
        digest.update(f"{path}\t{int(label)}\n".encode("utf-8"))
    return digest.hexdigest()


def read_manifest(path: str | Path) -> Manifest:
    """Read ``data/manifests/{dataset}.parquet``; :class:`ManifestError` names the file if it is not a
    manifest or its rows do not match its recorded hash."""
    path = Path(path)
    try:
        pa_table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise ManifestError(f"cannot read manifest {path}: {err}") from None
    raw = (pa_table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ManifestError(f"{path} is not a manifest: no {METADATA_KEY.decode()!r} schema metadata")
    metadata = json.loads(raw)
    table = pa_table.to_pandas()
    if manifest_hash(table) != metadata.get("manifest_hash"):
        raise ManifestError(f"manifest {path}: rows do not match the recorded manifest_hash (file edited?); rebuild it")
    return Manifest(table, metadata)


# ----------------------------------------------------------------------------- recipes


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _images_in(folder: Path, root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in folder.iterdir() if p.is_file() and _is_image(p))


def _subfolders(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


@lru_cache(maxsize=1)
def imagenet_val_labels() -> dict[str, int]:
    """ImageNet val file name -> ImageNet-1k label, for all 50,000 images, from ``filename_label.csv``
    shipped in the ``imagenet-x`` package."""
    frame = pd.read_csv(package_file("imagenet_x", "annotations/filename_label.csv"))
    return dict(zip(frame["file_name"].astype(str), frame["label"].astype(int)))


@dataclass
class _Listing:
    paths: list[str]
    labels: list[int]
    label_space: LabelSpace
    extra: dict[str, Any]


#: How the ImageNet val label sources are named in messages.
VAL_LABEL_SOURCE_NAMES = {"devkit": "the ImageNet devkit", "imagenet_x": "imagenet-x filename_label.csv"}


def imagenet_val_label_sources(entry: DatasetEntry, devkit_root: str | Path | None = None) -> dict[str, dict[str, int]]:
    """The available label sources of an ``imagenet_val`` entry: source (``devkit`` first, then
    ``imagenet_x``) -> file name -> label. ``devkit_root``: the extracted devkit (or its tar), or
    ``None`` when the user supplied none; the devkit is required only when it is the entry's sole source."""
    sources: dict[str, dict[str, int]] = {}
    if devkit_root is not None:
        if "devkit" not in entry.labels_from:
            raise ManifestError(
                f"dataset {entry.id}: an ImageNet devkit ({devkit_root}) was given, but the registry entry "
                f"takes labels from {list(entry.labels_from)} only (add devkit to labels_from)"
            )
        sources["devkit"] = imagenet_val_labels_from_devkit(devkit_root)
    elif "imagenet_x" not in entry.labels_from:
        raise ManifestError(
            f"dataset {entry.id}: labels_from is {list(entry.labels_from)}, but no ImageNet devkit "
            f"({entry.devkit_archive}) was given"
        )
    if "imagenet_x" in entry.labels_from:
        sources["imagenet_x"] = imagenet_val_labels()
    return sources


def _list_imagenet_val(entry: DatasetEntry, root: Path, devkit_root: str | Path | None = None) -> _Listing:
    sources = imagenet_val_label_sources(entry, devkit_root)
    (primary, labels_of), *others = sources.items()
    index = wnid_to_index()
    files: list[tuple[str, str | None]] = []  # (relative path, wnid folder or None)
    for folder in sorted(_subfolders(root), key=lambda p: p.name):  # wnid folders (e.g. after valprep.sh)
        if folder.name not in index:
            raise ManifestError(f"dataset {entry.id}: folder {folder} is not an ImageNet-1k wnid (layout imagenet_val)")
        files += [(rel, folder.name) for rel in _images_in(folder, root)]
    files += [(rel, None) for rel in _images_in(root, root)]
    names = [rel.rsplit("/", 1)[-1] for rel, _ in files]
    for other, other_labels in others:
        compare_val_labels(
            labels_of,
            other_labels,
            names,
            first_source=VAL_LABEL_SOURCE_NAMES[primary],
            second_source=VAL_LABEL_SOURCE_NAMES[other],
            dataset=entry.id,
        )
    paths, labels = [], []
    for (rel, wnid), name in zip(files, names):
        if wnid is None:
            if name not in labels_of:
                raise ManifestError(
                    f"dataset {entry.id}: {root / rel} is not an ImageNet val file name (ILSVRC2012_val_XXXXXXXX.JPEG) "
                    f"listed in {VAL_LABEL_SOURCE_NAMES[primary]}"
                )
            label = labels_of[name]
        else:
            label = index[wnid]
            for source, source_labels in sources.items():
                if name in source_labels and source_labels[name] != label:
                    raise ManifestError(
                        f"dataset {entry.id}: {root / rel} is in folder {wnid} (class {label}) but "
                        f"{VAL_LABEL_SOURCE_NAMES[source]} gives class {source_labels[name]}"
                    )
        paths.append(rel)
        labels.append(label)
    order = sorted(range(len(paths)), key=lambda i: (paths[i].rsplit("/", 1)[-1], paths[i]))
    return _Listing(
        [paths[i] for i in order],
        [labels[i] for i in order],
        label_space_named(entry.label_space),
        {"label_sources": list(sources)},
    )


def _list_wnid_folders(entry: DatasetEntry, root: Path) -> _Listing:
    index = wnid_to_index()
    space = label_space_named(entry.label_space)
    allowed = set(space.class_indices.tolist())
    paths, labels = [], []
    for folder in sorted(_subfolders(root), key=lambda p: p.name):
        if folder.name not in index:
            raise ManifestError(f"dataset {entry.id}: folder {folder} is not an ImageNet-1k wnid (layout wnid_folders)")
        label = index[folder.name]
        if label not in allowed:
            raise ManifestError(
                f"dataset {entry.id}: class folder {folder.name} (index {label}) is outside the "
                f"{space.name} label space"
            )
        for rel in _images_in(folder, root):
            paths.append(rel)
            labels.append(label)
    return _Listing(paths, labels, space, {})


def _list_class_index_folders(entry: DatasetEntry, root: Path) -> _Listing:
    numbered = []
    for folder in _subfolders(root):
        if not folder.name.isdigit() or not 0 <= int(folder.name) < len(imagenet_synsets()):
            raise ManifestError(
                f"dataset {entry.id}: folder {folder} is not a class index 0..999 (layout class_index_folders)"
            )
        numbered.append((int(folder.name), folder))
    paths, labels = [], []
    for label, folder in sorted(numbered):  # integer order: 2 before 10
        for rel in _images_in(folder, root):
            paths.append(rel)
            labels.append(label)
    return _Listing(paths, labels, label_space_named(entry.label_space), {})


def _list_objectnet(entry: DatasetEntry, root: Path) -> _Listing:
    mapping = objectnet_mapping(root / "mappings")
    images = root / "images"
    if not images.is_dir():
        raise ManifestError(f"dataset {entry.id}: {images} does not exist (layout objectnet: images/<class folder>/)")
    paths, labels, excluded = [], [], 0
    present = set()
    for folder in sorted(_subfolders(images), key=lambda p: p.name):
        files = _images_in(folder, root)
        if folder.name not in mapping.folder_to_indices:
            excluded += len(files)
            continue
        present.add(folder.name)
        label = mapping.label_of_folder(folder.name)
        paths += files
        labels += [label] * len(files)
    absent = sorted(set(mapping.folder_to_indices) - present)
    if absent:
        log.warning("dataset %s: mapped ObjectNet classes without an image folder: %s", entry.id, absent)
    class_mapping = {
        f: {
            "objectnet_class": mapping.folder_to_label[f],
            "imagenet_indices": list(mapping.folder_to_indices[f]),
            "group": mapping.group_of_folder[f],
        }
        for f in sorted(mapping.folder_to_indices)
    }
    return _Listing(
        paths, labels, mapping.label_space(), {"class_mapping": class_mapping, "n_excluded_unmapped": excluded}
    )


def _list_ood_images(entry: DatasetEntry, root: Path) -> _Listing:
    paths = sorted(
        Path(dirpath, name).relative_to(root).as_posix()
        for dirpath, dirnames, filenames in os.walk(root)
        for name in filenames
        if _is_image(Path(name)) and not any(part.startswith(".") for part in Path(dirpath).relative_to(root).parts)
    )
    return _Listing(paths, [-1] * len(paths), label_space_named("ood"), {})


def _list_cue_conflict(entry: DatasetEntry, root: Path) -> _Listing:
    from clip_robustness.datasets.cue_conflict import list_cue_conflict, load_category_mapping

    mapping = load_category_mapping(entry.category_mapping or "model_vs_human_16")
    images = list_cue_conflict(root, mapping, entry.id)
    indices, groups = mapping.label_space_arrays()
    labels = [min(mapping.indices[mapping.position(image.shape)]) for image in images]
    extra = {"categories": mapping.to_json_dict(), "category_mapping": mapping.source}
    return _Listing([image.path for image in images], labels, LabelSpace("cue_conflict", indices, groups), extra)


#: The recipe of each layout the registry knows (:data:`clip_robustness.datasets.registry.LAYOUTS`, same order).
LAYOUT_RECIPES: dict[str, Callable[[DatasetEntry, Path], _Listing]] = dict(
    zip(
        LAYOUTS,
        (
            _list_imagenet_val,
            _list_wnid_folders,
            _list_class_index_folders,
            _list_objectnet,
            _list_ood_images,
            _list_cue_conflict,
        ),
        strict=True,
    )
)


# ----------------------------------------------------------------------------- building


def check_image(path: str | Path) -> str | None:
    """``None`` if ``path`` decodes completely as an image, else the reason.

    The header is verified, then the whole image is decoded (``Image.load``; JPEGs in draft mode, which
    still reads every byte of the compressed data), so a truncated file is caught here, in the manifest
    step where ``downloads.skip_corrupt_images`` applies, not later in a logits job.
    """
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
        return None
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, struct.error, ...)
        return f"{type(err).__name__}: {err}"


@dataclass(frozen=True)
class ManifestBuild:
    """A built manifest before writing: ``table`` (index, path, label), ``metadata``, ``skipped``
    (DataFrame ``path, reason`` of unreadable images left out)."""

    table: pd.DataFrame
    metadata: dict[str, Any]
    skipped: pd.DataFrame


# Longer than 60 lines: the manifest recipe's checks in the order a user meets them (root, layout, listing, subset,
# images, count), each with its own message.
def build_manifest(
    entry: DatasetEntry,
    root: str | Path,
    *,
    skip_corrupt: bool = False,
    check_images: bool = True,
    workers: int = 4,
    devkit_root: str | Path | None = None,
    subset: dict[str, int] | None = None,
) -> ManifestBuild:
    """List the images of ``entry`` under ``root`` (the folder its ``subdir`` names inside the extracted
    archive, or a user's folder) following its ``layout``, with ImageNet-1k labels.

    Every image is fully decoded (``check_images``, :func:`check_image`); an unreadable one stops the build with
    :class:`CorruptImageError` naming it, unless ``skip_corrupt`` (config
    ``downloads.skip_corrupt_images``), which leaves it out and lists it in ``skipped``.
    ``devkit_root`` (layout ``imagenet_val``): the extracted ImageNet devkit when the user supplied
    one (see :func:`imagenet_val_label_sources`). ``subset`` (ImageNet-C, config
    ``datasets.imagenet_c.images_per_condition``): ``{"images_per_condition", "seed"}`` keeps a class-balanced,
    seeded subset of the listed images (:mod:`clip_robustness.datasets.subset`), recorded as metadata ``subset``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(
            f"dataset {entry.id}: folder {root} does not exist (layout {entry.layout}, subdir {entry.subdir!r})"
        )
    if entry.layout not in LAYOUT_RECIPES:
        raise ManifestError(f"dataset {entry.id}: unknown layout {entry.layout!r}; known: {sorted(LAYOUT_RECIPES)}")
    if entry.layout == "imagenet_val":
        listing = _list_imagenet_val(entry, root, devkit_root)
    elif devkit_root is not None:
        raise ManifestError(
            f"dataset {entry.id}: an ImageNet devkit is only read for layout imagenet_val, not {entry.layout}"
        )
    else:
        listing = LAYOUT_RECIPES[entry.layout](entry, root)
    if not listing.paths:
        raise ManifestError(
            f"dataset {entry.id}: no images (*{', *'.join(IMAGE_SUFFIXES)}) found under {root} "
            f"(layout {entry.layout}); is subdir {entry.subdir!r} right?"
        )
    subset_extra = _apply_subset(listing, subset) if subset else {}
    reasons: list[str | None] = [None] * len(listing.paths)
    if check_images:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            reasons = list(pool.map(check_image, (root / p for p in listing.paths), chunksize=64))
    bad = [(p, r) for p, r in zip(listing.paths, reasons) if r is not None]
    if bad and not skip_corrupt:
        shown = "; ".join(f"{root / p} ({r})" for p, r in bad[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise CorruptImageError(
            f"dataset {entry.id}: {len(bad)} unreadable image(s): {shown}{more}. To leave them out, set "
            f"downloads.skip_corrupt_images: true and run the same command (they are listed in "
            f"{skipped_path(entry.id)}). If they were damaged on this disk, extract again instead: delete "
            + ", ".join(extraction_marker(archive) for archive in entry.archives)
            + " and run the same command."
        )
    keep = [i for i, r in enumerate(reasons) if r is None]
    table = pd.DataFrame(
        {
            "index": np.arange(len(keep), dtype=np.int32),
            "path": pd.Series([listing.paths[i] for i in keep], dtype=object),
            "label": np.asarray([listing.labels[i] for i in keep], dtype=np.int16),
        }
    )
    if entry.n_images is not None and len(table) != entry.n_images:
        log.warning("dataset %s: %d images, the published count is %d", entry.id, len(table), entry.n_images)
    metadata = {
        "dataset": entry.id,
        "title": entry.title,
        "root": str(root),
        "layout": entry.layout,
        "manifest_hash": manifest_hash(table),
        "n_images": int(len(table)),
        "label_space": json.loads(listing.label_space.to_json()),
        "border_crop_px": entry.border_crop_px,
        "n_skipped": len(bad),
        "registry_entry": entry.to_dict(),
        "pipeline_version": PIPELINE_VERSION,
        **listing.extra,
        **subset_extra,
    }
    skipped = pd.DataFrame(bad, columns=SKIPPED_COLUMNS)
    return ManifestBuild(table, metadata, skipped)


def _apply_subset(listing: _Listing, subset: dict[str, int]) -> dict[str, Any]:
    """Keep the class-balanced subset of ``listing`` in place; the ``subset`` metadata entry."""
    from clip_robustness.datasets.subset import class_balanced_subset, subset_record

    n, seed = int(subset["images_per_condition"]), int(subset["seed"])
    keep = class_balanced_subset(listing.paths, listing.labels, n, seed)
    available = len(listing.paths)
    listing.paths = [listing.paths[i] for i in keep]
    listing.labels = [listing.labels[i] for i in keep]
    return {"subset": subset_record(n, seed, available, len(keep))}


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def write_manifest(build: ManifestBuild, path: str | Path, skipped_path: str | Path) -> None:
    """Write the manifest parquet and its skipped-images CSV (header only when nothing was skipped),
    each atomically (temp file in the same folder, then rename)."""
    table = pa.Table.from_pandas(build.table, schema=SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(build.metadata).encode("utf-8")})
    _atomic_write(Path(skipped_path), lambda tmp: build.skipped.to_csv(tmp, index=False))
    _atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def dataset_root(
    entry: DatasetEntry, extracted_dir: str | Path = EXTRACTED_DIR, local_folder: str | Path | None = None
) -> Path:
    """The folder ``entry``'s images are read from: the user's ``local_folder`` (config
    ``downloads.local_folders[dataset]``) as given, else ``{extracted_dir}/{first archive}/{subdir}``."""
    if local_folder is not None:
        return Path(local_folder).expanduser()
    return Path(extracted_dir) / entry.archives[0] / entry.subdir
