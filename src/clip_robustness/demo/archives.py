"""Miniature archives in exactly the on-disk layouts of the real datasets, for tests and the demo.

Each writer takes ``render(label, rng) -> PIL.Image`` (``label``: ImageNet-1k index, -1 for OOD
images), the classes and the images per class, and writes one archive whose member names, nesting,
compression and file types follow the real one (see each docstring), deterministically for a given
seed (tar mtimes/uids fixed, gzip mtime 0, fixed zip timestamps). They return the archive's path.
:func:`write_dataset_registry` writes a registry in the format of ``config/datasets.yaml``.

Known differences from the real archives: file counts, image sizes and content; the ObjectNet zip is
not password-protected (Python cannot write ZipCrypto; extraction accepts both).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from clip_robustness.datasets.devkit import DEVKIT_ARCHIVE, META_MAT, N_VAL_IMAGES, SYNSET_FIELDS, VAL_GROUND_TRUTH
from clip_robustness.datasets.label_spaces import imagenet_descriptions, imagenet_synsets
from clip_robustness.datasets.manifest import imagenet_val_labels

Renderer = Callable[[int, np.random.Generator], Image.Image]
Member = tuple[str, bytes]

#: ImageNet-C archive -> its corruptions (the Zenodo record's grouping).
IMAGENET_C_GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "spatter", "gaussian_blur", "saturate"),
}
#: ImageNet-V2 variant -> (archive name, top folder).
IMAGENET_V2_VARIANTS: dict[str, tuple[str, str]] = {
    "threshold0.7": ("imagenetv2-threshold0.7.tar.gz", "imagenetv2-threshold0.7-format-val"),
    "matched-frequency": ("imagenetv2-matched-frequency.tar.gz", "imagenetv2-matched-frequency-format-val"),
    "top-images": ("imagenetv2-top-images.tar.gz", "imagenetv2-top-images-format-val"),
}
#: MOS OOD set -> archive name (each holds ``<name>/images/*.jpg``).
MOS_SETS = {"iNaturalist": "iNaturalist.tar.gz", "SUN": "SUN.tar.gz", "Places": "Places.tar.gz"}


def default_renderer(label: int, rng: np.random.Generator, size: int = 16) -> Image.Image:
    """A small RGB image: a flat colour derived from ``label`` plus a little noise (tests read it back)."""
    return Image.fromarray(
        np.clip(np.array(label_color(label), dtype=np.float64) + rng.normal(0, 2, (size, size, 3)), 0, 255).astype(
            np.uint8
        ),
        mode="RGB",
    )


def label_color(label: int) -> tuple[int, int, int]:
    """The flat colour :func:`default_renderer` paints for ``label`` (-1: mid grey)."""
    if label < 0:
        return (128, 128, 128)
    return ((label * 53) % 200 + 28, (label * 97) % 200 + 28, (label * 29) % 200 + 28)


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _dirs_of(names: Iterable[str]) -> list[str]:
    dirs = set()
    for name in names:
        parts = name.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(dirs)


def _write_tar(path: Path, members: Sequence[Member], gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw:
        stream: Any = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if gz else raw
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for d in _dirs_of(n for n, _ in members):
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(info)
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
        if gz:
            stream.close()
    return path


def _write_zip(path: Path, members: Sequence[Member]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for d in _dirs_of(n for n, _ in members):
            info = zipfile.ZipInfo(d + "/", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o40755 << 16) | 0x10
            zf.writestr(info, b"")
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return path


def _file_id(rng: np.random.Generator) -> str:
    return hashlib.sha1(rng.bytes(16)).hexdigest()


def _wnid_members(
    prefix: str,
    classes: Sequence[int],
    images_per_class: int,
    render: Renderer,
    rng: np.random.Generator,
    ext: str,
    fmt: str,
    label_of: Callable[[int], int] | None = None,
) -> list[Member]:
    wnids = imagenet_synsets()
    members = []
    for c in classes:
        for k in range(images_per_class):
            label = c if label_of is None else label_of(c)
            members.append((f"{prefix}{wnids[c]}/{_file_id(rng)}{ext}", _encode(render(label, rng), fmt)))
    return members


def write_hendrycks_tar(
    out_dir: str | Path, name: str, classes: Sequence[int], images_per_class: int, render: Renderer, seed: int = 0
) -> Path:
    """``{name}.tar`` (``imagenet-r``, ``imagenet-a`` or ``imagenet-o``): ``{name}/<wnid>/<id>.jpg`` plus
    ``{name}/README.txt``. ImageNet-O images are rendered with label -1 (they are OOD)."""
    rng = np.random.default_rng(seed)
    label_of = (lambda c: -1) if name == "imagenet-o" else None
    members = _wnid_members(f"{name}/", classes, images_per_class, render, rng, ".jpg", "JPEG", label_of)
    members.append((f"{name}/README.txt", b"Miniature synthetic copy in the layout of the real archive.\n"))
    return _write_tar(Path(out_dir) / f"{name}.tar", members, gz=False)


def write_imagenet_sketch_zip(
    out_dir: str | Path, classes: Sequence[int], images_per_class: int, render: Renderer, seed: int = 0
) -> Path:
    """``ImageNet-Sketch.zip``: ``sketch/<wnid>/<id>.JPEG``."""
    rng = np.random.default_rng(seed)
    return _write_zip(
        Path(out_dir) / "ImageNet-Sketch.zip",
        _wnid_members("sketch/", classes, images_per_class, render, rng, ".JPEG", "JPEG"),
    )


def write_imagenet_v2_tar(
    out_dir: str | Path, variant: str, classes: Sequence[int], images_per_class: int, render: Renderer, seed: int = 0
) -> Path:
    """``imagenetv2-{variant}.tar.gz``: ``imagenetv2-{variant}-format-val/<class index>/<sha1>.jpeg``
    (folders named by the integer class index: include e.g. 2 and 10 to exercise the string-sort trap)."""
    archive, top = IMAGENET_V2_VARIANTS[variant]
    rng = np.random.default_rng(seed)
    members = [
        (f"{top}/{c}/{_file_id(rng)}.jpeg", _encode(render(c, rng), "JPEG"))
        for c in classes
        for _ in range(images_per_class)
    ]
    return _write_tar(Path(out_dir) / archive, members, gz=True)


def imagenet_val_file_names(classes: Sequence[int], images_per_class: int) -> list[str]:
    """Real ImageNet val file names of the given classes (the first ``images_per_class`` per class in
    file-name order, from imagenet-x's ``filename_label.csv``)."""
    by_class: dict[int, list[str]] = {}
    for name, label in sorted(imagenet_val_labels().items()):
        by_class.setdefault(label, []).append(name)
    names = []
    for c in classes:
        if len(by_class.get(c, [])) < images_per_class:
            raise ValueError(f"ImageNet val has only {len(by_class.get(c, []))} images of class {c}")
        names += by_class[c][:images_per_class]
    return names


def write_imagenet_val_tar(
    out_dir: str | Path, classes: Sequence[int], images_per_class: int, render: Renderer, seed: int = 0
) -> Path:
    """``ILSVRC2012_img_val.tar``: flat ``ILSVRC2012_val_XXXXXXXX.JPEG`` members with real val file names
    whose real labels (imagenet-x ``filename_label.csv``) are ``classes``; images rendered with that label."""
    rng = np.random.default_rng(seed)
    labels = imagenet_val_labels()
    names = sorted(imagenet_val_file_names(classes, images_per_class))
    members = [(name, _encode(render(labels[name], rng), "JPEG")) for name in names]
    return _write_tar(Path(out_dir) / "ILSVRC2012_img_val.tar", members, gz=False)


#: Inner (non-leaf) WordNet synsets written into the synthetic devkit's meta.mat after the 1000 leaves:
#: wnid, words, and how many leaves (the first ones of the ID order) they list as children.
_DEVKIT_INNER_SYNSETS = (
    ("n00001740", "entity", 0),
    ("n00002684", "object, physical object", 1),
    ("n00015388", "animal, animate being, beast, brute, creature, fauna", 2),
    ("n00021939", "artifact, artefact", 3),
)
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created on: Thu Jan  1 00:00:00 1970 (clip_robustness synthetic)"


def _devkit_meta_mat(id_order: Sequence[int]) -> bytes:
    """meta.mat bytes: struct array ``synsets`` (fields :data:`SYNSET_FIELDS`), leaf ILSVRC2012_ID k
    (1-based) = class ``id_order[k - 1]``, then the inner synsets of :data:`_DEVKIT_INNER_SYNSETS`
    with IDs above 1000 and ``num_children`` > 0. The header's creation time is fixed (determinism)."""
    from scipy.io import savemat

    wnids, words = imagenet_synsets(), imagenet_descriptions()
    n_leaves = len(id_order)
    rows = []
    for k, c in enumerate(id_order, start=1):
        rows.append(
            (float(k), wnids[c], words[c], f"synthetic gloss of {wnids[c]}", 0.0, np.zeros((1, 0)), 0.0, 1300.0)
        )
    for j, (wnid, text, depth) in enumerate(_DEVKIT_INNER_SYNSETS):
        children = np.arange(1, 2 + depth, dtype=np.float64).reshape(1, -1) if depth else np.array([[n_leaves + 2.0]])
        rows.append(
            (
                float(n_leaves + 1 + j),
                wnid,
                text,
                f"synthetic gloss of {wnid}",
                float(children.size),
                children,
                float(depth + 1),
                0.0,
            )
        )
    synsets = np.empty((len(rows), 1), dtype=[(f, object) for f in SYNSET_FIELDS])
    for i, row in enumerate(rows):
        synsets[i, 0] = row
    buf = io.BytesIO()
    savemat(buf, {"synsets": synsets}, format="5", do_compression=False)
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def write_imagenet_devkit_tar(out_dir: str | Path, file_labels: Mapping[str, int], seed: int = 0) -> Path:
    """``ILSVRC2012_devkit_t12.tar.gz`` in the real layout: ``ILSVRC2012_devkit_t12/data/meta.mat`` (struct
    array ``synsets`` with the real field names; the 1000 leaves with ``num_children`` 0 and
    ``ILSVRC2012_ID`` 1..1000, plus a few inner WordNet synsets with IDs above 1000 and
    ``num_children`` > 0), ``data/ILSVRC2012_validation_ground_truth.txt`` (50,000 lines: line i = the
    ILSVRC2012_ID of ``ILSVRC2012_val_{i:08d}.JPEG``), ``data/ILSVRC2012_validation_blacklisted.txt``,
    ``readme.txt`` and ``COPYING``.

    ``file_labels``: val file name -> ImageNet-1k label (sorted-wnid index); their lines hold the ID of
    that label, every other line a seeded random valid ID. The ILSVRC2012_ID order is a seeded
    permutation of the sorted wnids: the real order is not the sorted one either, but the real
    ID <-> wnid mapping cannot be shipped here, so this permutation stands in for it (a reader that
    skipped the ID -> wnid step would get wrong labels).
    """
    rng = np.random.default_rng(seed)
    id_order = rng.permutation(len(imagenet_synsets()))  # ILSVRC2012_ID k+1 <-> class id_order[k]
    id_of_class = {int(c): k + 1 for k, c in enumerate(id_order)}
    ids = rng.integers(1, len(id_order) + 1, size=N_VAL_IMAGES)
    for name, label in file_labels.items():
        match = _VAL_NAME.match(name)
        if match is None or not 1 <= int(match[1]) <= N_VAL_IMAGES:
            raise ValueError(
                f"{name!r} is not an ImageNet val file name ILSVRC2012_val_XXXXXXXX.JPEG (1..{N_VAL_IMAGES})"
            )
        ids[int(match[1]) - 1] = id_of_class[int(label)]
    blacklisted = sorted(rng.choice(N_VAL_IMAGES, size=20, replace=False) + 1)
    top = META_MAT.split("/", 1)[0]
    members: list[Member] = [
        (f"{top}/COPYING", b"Synthetic stand-in for the ILSVRC2012 devkit license.\n"),
        (META_MAT, _devkit_meta_mat([int(c) for c in id_order])),
        (VAL_GROUND_TRUTH, "".join(f"{i}\n" for i in ids).encode()),
        (f"{top}/data/ILSVRC2012_validation_blacklisted.txt", "".join(f"{i}\n" for i in blacklisted).encode()),
        (f"{top}/readme.txt", b"Miniature synthetic copy in the layout of the real devkit.\n"),
    ]
    return _write_tar(Path(out_dir) / DEVKIT_ARCHIVE, members, gz=True)


def write_imagenet_c_tar(
    out_dir: str | Path,
    group: str,
    classes: Sequence[int],
    images_per_class: int,
    render: Renderer,
    seed: int = 0,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
) -> Path:
    """``{group}.tar`` (``noise``, ``blur``, ``weather``, ``digital``, ``extra``):
    ``<corruption>/<severity>/<wnid>/<id>.JPEG`` for the group's corruptions (or ``corruptions``)."""
    rng = np.random.default_rng(seed)
    members: list[Member] = []
    for corruption in corruptions or IMAGENET_C_GROUPS[group]:
        if corruption not in IMAGENET_C_GROUPS[group]:
            raise ValueError(f"{corruption!r} is not in ImageNet-C's {group}.tar: {IMAGENET_C_GROUPS[group]}")
        for severity in severities:
            members += _wnid_members(
                f"{corruption}/{severity}/", classes, images_per_class, render, rng, ".JPEG", "JPEG"
            )
    return _write_tar(Path(out_dir) / f"{group}.tar", members, gz=False)


def write_mos_ood_tar(out_dir: str | Path, name: str, n_images: int, render: Renderer, seed: int = 0) -> Path:
    """``{name}.tar.gz`` (``iNaturalist``, ``SUN``, ``Places``): ``{name}/images/<id>.jpg``, label -1."""
    rng = np.random.default_rng(seed)
    members = [(f"{name}/images/{_file_id(rng)}.jpg", _encode(render(-1, rng), "JPEG")) for _ in range(n_images)]
    return _write_tar(Path(out_dir) / MOS_SETS[name], members, gz=True)


def write_dtd_tar(
    out_dir: str | Path, textures: Sequence[str], images_per_class: int, render: Renderer, seed: int = 0
) -> Path:
    """``dtd-r1.0.1.tar.gz``: ``dtd/images/<texture>/<texture>_<k>.jpg`` plus ``dtd/labels/`` split files
    and ``dtd/imdb/`` (not images), label -1."""
    rng = np.random.default_rng(seed)
    members: list[Member] = []
    names = []
    for texture in textures:
        for k in range(images_per_class):
            name = f"{texture}/{texture}_{k + 1:04d}.jpg"
            names.append(name)
            members.append((f"dtd/images/{name}", _encode(render(-1, rng), "JPEG")))
    members.append(("dtd/labels/train1.txt", ("\n".join(names) + "\n").encode()))
    members.append(("dtd/labels/labels_joint_anno.txt", "".join(f"{n} {n.split('/')[0]}\n" for n in names).encode()))
    members.append(("dtd/imdb/imdb.mat", b"not an image"))
    return _write_tar(Path(out_dir) / "dtd-r1.0.1.tar.gz", members, gz=True)


def write_objectnet_zip(
    out_dir: str | Path,
    classes: Mapping[str, Sequence[int]],
    images_per_class: int,
    render: Renderer,
    seed: int = 0,
    unmapped_folders: Sequence[str] = ("squeegee",),
    border_color: tuple[int, int, int] = (255, 0, 0),
) -> Path:
    """``objectnet-1.0.zip``: ``objectnet-1.0/images/<folder>/<id>.png`` with a 1-pixel border, and the
    four files of ``objectnet-1.0/mappings/`` in their real formats.

    ``classes``: image folder (e.g. ``alarm_clock``) -> ImageNet-1k indices mapped to that ObjectNet
    class (images rendered with the smallest). ``unmapped_folders``: ObjectNet classes with no ImageNet
    counterpart (images rendered with -1). The mapping names ImageNet classes by their WordNet lemmas;
    ``imagenet_to_label_2012_v2`` lists them in a shuffled "2012 id" order with
    ``pytorch_to_imagenet_2012_id.json`` the permutation, as in the real files.
    """
    rng = np.random.default_rng(seed)
    descriptions = imagenet_descriptions()
    order_2012 = np.random.default_rng(1234).permutation(len(descriptions))  # line i holds class order_2012[i]
    label_name = {folder: folder.replace("_", " ").capitalize() for folder in [*classes, *unmapped_folders]}
    mappings = {
        "folder_to_objectnet_label.json": {f: label_name[f] for f in [*classes, *unmapped_folders]},
        "objectnet_to_imagenet_1k.json": {
            label_name[f]: "; ".join(descriptions[i] for i in indices) for f, indices in classes.items()
        },
        "pytorch_to_imagenet_2012_id.json": {str(int(c)): int(line) for line, c in enumerate(order_2012)},
    }
    members: list[Member] = [
        (f"objectnet-1.0/mappings/{name}", json.dumps(data, indent=2).encode()) for name, data in mappings.items()
    ]
    members.append(
        (
            "objectnet-1.0/mappings/imagenet_to_label_2012_v2",
            "".join(descriptions[c] + "\n" for c in order_2012).encode(),
        )
    )
    for folder in [*classes, *unmapped_folders]:
        label = min(classes[folder]) if folder in classes else -1
        for _ in range(images_per_class):
            inner = render(label, rng).convert("RGB")
            framed = Image.new("RGB", (inner.width + 2, inner.height + 2), border_color)
            framed.paste(inner, (1, 1))
            members.append((f"objectnet-1.0/images/{folder}/{_file_id(rng)}.png", _encode(framed, "PNG")))
    return _write_zip(Path(out_dir) / "objectnet-1.0.zip", members)


def sha256_of(path: str | Path) -> str:
    """sha256 (hex) of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive_entry(path: str | Path, url: str | None = None, **fields: Any) -> dict[str, Any]:
    """A registry ``archives`` entry for a generated archive: its URL (default ``file://`` + absolute
    path), sha256 and size; ``fields`` add or override keys (e.g. ``user_supplied=True``)."""
    path = Path(path).absolute()
    return {
        "url": url or path.as_uri(),
        "sha256": sha256_of(path),
        "size_bytes": path.stat().st_size,
        "source": "generated by clip_robustness.demo.archives",
        **fields,
    }


def write_dataset_registry(
    path: str | Path, archives: Mapping[str, Mapping[str, Any]], datasets: Mapping[str, Mapping[str, Any]]
) -> Path:
    """Write a registry in the format of ``config/datasets.yaml`` (see
    :mod:`clip_robustness.datasets.registry`): ``archives`` name -> entry (e.g. from
    :func:`archive_entry`), ``datasets`` id -> entry. It is parsed back before returning, so a bad
    entry fails here, naming the key."""
    from clip_robustness.datasets.registry import load_dataset_registry

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "archives": {k: dict(v) for k, v in archives.items()},
                "datasets": {k: dict(v) for k, v in datasets.items()},
            },
            sort_keys=False,
        )
    )
    load_dataset_registry(path)
    return path


#: The real registry, in the repository this package is installed from (editable install).
REAL_REGISTRY = Path(__file__).resolve().parents[3] / "config" / "datasets.yaml"


def registry_datasets(
    *ids: str, registry_path: str | Path | None = None, with_devkit: bool = False
) -> dict[str, dict[str, Any]]:
    """The ``datasets`` entries of ``ids`` copied from the real registry (default: the repository's
    ``config/datasets.yaml``) -- layout, subdir, label space -- for a generated registry whose archives
    mimic the real ones. Unless ``with_devkit``, ImageNet val's devkit label source (``labels_from``,
    ``devkit_archive``) is dropped, so the entry needs no devkit archive in the generated registry
    (labels from imagenet-x only)."""
    raw = yaml.safe_load(Path(registry_path or REAL_REGISTRY).read_text())["datasets"]
    entries = {i: dict(raw[i]) for i in ids}
    if not with_devkit:
        for entry in entries.values():
            entry.pop("labels_from", None)
            entry.pop("devkit_archive", None)
    return entries
