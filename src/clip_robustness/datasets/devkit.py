"""ImageNet val labels from the official ILSVRC2012 devkit (``ILSVRC2012_devkit_t12.tar.gz``).

The devkit holds, under ``ILSVRC2012_devkit_t12/data/``:

- ``meta.mat``: a MATLAB struct array ``synsets`` with fields ``ILSVRC2012_ID``, ``WNID``, ``words``,
  ``gloss``, ``num_children``, ``children``, ``wordnet_height``, ``num_train_images``. The 1000
  classification classes are the leaves (``num_children == 0``) with ``ILSVRC2012_ID`` 1..1000; the
  other synsets (IDs above 1000) are inner WordNet nodes and are ignored. The ID order is not the
  sorted-wnid order classifiers use.
- ``ILSVRC2012_validation_ground_truth.txt``: 50,000 lines; line i (1-based) is the ``ILSVRC2012_ID``
  of ``ILSVRC2012_val_{i:08d}.JPEG``.

A label is mapped ILSVRC2012_ID -> WNID -> ImageNet-1k index (position in the sorted wnid list,
:func:`~clip_robustness.datasets.label_spaces.wnid_to_index`). The devkit is read from its extracted
folder or straight from the ``.tar.gz``.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from clip_robustness.datasets.errors import ManifestError
from clip_robustness.datasets.label_spaces import N_IMAGENET_CLASSES, imagenet_synsets, wnid_to_index

DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
META_MAT = f"{DEVKIT_DIR}/data/meta.mat"
VAL_GROUND_TRUTH = f"{DEVKIT_DIR}/data/ILSVRC2012_validation_ground_truth.txt"
#: Fields of meta.mat's ``synsets`` struct array, in the order of the real file.
SYNSET_FIELDS = (
    "ILSVRC2012_ID",
    "WNID",
    "words",
    "gloss",
    "num_children",
    "children",
    "wordnet_height",
    "num_train_images",
)
N_VAL_IMAGES = 50_000


def val_file_name(number: int) -> str:
    """``ILSVRC2012_val_{number:08d}.JPEG`` (``number`` 1-based: the ground-truth line number)."""
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def _read_members(devkit: Path) -> tuple[bytes, bytes, str]:
    """The bytes of meta.mat and of the ground-truth file, and where they were read (for messages).

    ``devkit``: the ``.tar.gz`` itself, the folder it was extracted into (holding
    ``ILSVRC2012_devkit_t12/``), or the ``ILSVRC2012_devkit_t12`` folder.
    """
    wanted = (META_MAT, VAL_GROUND_TRUTH)
    if devkit.is_file():
        try:
            with tarfile.open(devkit, "r:*") as tar:
                found = {}
                for name in wanted:
                    member = tar.extractfile(name)
                    if member is None:
                        raise KeyError(name)
                    found[name] = member.read()
        except KeyError as err:
            raise ManifestError(
                f"ImageNet devkit {devkit} has no member {err.args[0]} (is it ILSVRC2012_devkit_t12.tar.gz?)"
            ) from None
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ManifestError(f"cannot read ImageNet devkit archive {devkit}: {err}") from None
        return found[META_MAT], found[VAL_GROUND_TRUTH], str(devkit)
    base = devkit.parent if devkit.name == DEVKIT_DIR else devkit
    missing = [str(base / n) for n in wanted if not (base / n).is_file()]
    if missing:
        raise ManifestError(
            f"ImageNet devkit folder {devkit}: missing {missing} (expected the extracted "
            f"{DEVKIT_ARCHIVE}: {DEVKIT_DIR}/data/meta.mat and the validation ground truth)"
        )
    return (base / META_MAT).read_bytes(), (base / VAL_GROUND_TRUTH).read_bytes(), str(base)


def _scalar(value: object) -> object:
    """A struct field as loaded by scipy (possibly a 0-d or 1-element array) as a Python scalar."""
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"expected one value, got shape {array.shape}")
    return array.reshape(()).item()


def parse_meta_mat(data: bytes, where: str = "meta.mat") -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the 1000 leaf synsets (``num_children == 0``) of a devkit ``meta.mat``.

    Raises :class:`ManifestError` naming ``where`` unless the leaves are exactly IDs 1..1000 and their
    wnids exactly the ImageNet-1k wnids.
    """
    from scipy.io import loadmat  # scipy is only needed here

    try:
        synsets = loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
    except Exception as err:  # scipy raises ValueError, TypeError, KeyError, MatReadError...
        raise ManifestError(
            f"{where}: not a devkit meta.mat with a 'synsets' struct array ({type(err).__name__}: {err})"
        ) from None
    names = synsets.dtype.names or ()
    lacking = [f for f in ("ILSVRC2012_ID", "WNID", "num_children") if f not in names]
    if lacking:
        raise ManifestError(f"{where}: the synsets struct lacks field(s) {lacking}; has {list(names)}")
    leaves: dict[int, str] = {}
    for row in np.atleast_1d(synsets).ravel():
        try:
            ilsvrc_id, wnid, n_children = (
                int(_scalar(row["ILSVRC2012_ID"])),
                str(_scalar(row["WNID"])),
                int(_scalar(row["num_children"])),
            )
        except (ValueError, TypeError) as err:
            raise ManifestError(f"{where}: unreadable synset entry {row!r}: {err}") from None
        if n_children != 0:
            continue  # an inner WordNet node, not a classification class
        if ilsvrc_id in leaves:
            raise ManifestError(f"{where}: ILSVRC2012_ID {ilsvrc_id} is given to both {leaves[ilsvrc_id]} and {wnid}")
        leaves[ilsvrc_id] = wnid
    if sorted(leaves) != list(range(1, N_IMAGENET_CLASSES + 1)):
        raise ManifestError(
            f"{where}: the leaf synsets (num_children == 0) should have ILSVRC2012_ID 1..{N_IMAGENET_CLASSES}; "
            f"found {len(leaves)} leaves with IDs {sorted(leaves)[:5]}...{sorted(leaves)[-5:]}"
        )
    index = wnid_to_index()
    unknown = sorted(w for w in leaves.values() if w not in index)
    if unknown or len(set(leaves.values())) != N_IMAGENET_CLASSES:
        raise ManifestError(
            f"{where}: the leaf wnids are not the 1000 ImageNet-1k wnids (unknown: {unknown[:10]}, "
            f"{N_IMAGENET_CLASSES - len(set(leaves.values()))} repeated)"
        )
    return leaves


def parse_val_ground_truth(data: bytes, where: str = "ILSVRC2012_validation_ground_truth.txt") -> list[int]:
    """The ILSVRC2012_IDs of the ground-truth file, line by line (line i: image i). Raises
    :class:`ManifestError` naming the line of a value that is not an ID in 1..1000."""
    ids = []
    lines = data.decode("ascii", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text.isdigit() or not 1 <= int(text) <= N_IMAGENET_CLASSES:
            raise ManifestError(
                f"{where}, line {number} ({val_file_name(number)}): {line!r} is not an ILSVRC2012_ID "
                f"in 1..{N_IMAGENET_CLASSES}"
            )
        ids.append(int(text))
    if len(ids) != N_VAL_IMAGES:
        raise ManifestError(f"{where}: {len(ids)} lines, expected {N_VAL_IMAGES} (one per ImageNet val image)")
    return ids


def imagenet_val_labels_from_devkit(devkit_root: str | Path) -> dict[str, int]:
    """ImageNet val file name -> ImageNet-1k label (sorted-wnid index) for all 50,000 images, from the
    official devkit: its extracted folder (holding ``ILSVRC2012_devkit_t12/``), that folder itself,
    or the ``ILSVRC2012_devkit_t12.tar.gz`` archive. Raises :class:`ManifestError` naming the file at
    fault when the devkit is incomplete or not in the ILSVRC2012 format."""
    meta, ground_truth, where = _read_members(Path(devkit_root))
    id_to_wnid = parse_meta_mat(meta, f"{where}: {META_MAT}")
    index = wnid_to_index()
    id_to_label = {i: index[w] for i, w in id_to_wnid.items()}
    ids = parse_val_ground_truth(ground_truth, f"{where}: {VAL_GROUND_TRUTH}")
    return {val_file_name(number): id_to_label[i] for number, i in enumerate(ids, start=1)}


def compare_val_labels(
    first: Mapping[str, int],
    second: Mapping[str, int],
    names: list[str],
    *,
    first_source: str,
    second_source: str,
    dataset: str,
    show: int = 5,
) -> None:
    """Raise :class:`ManifestError` when the two label sources disagree on any of ``names`` (files of
    the dataset found in both), naming the first ``show`` files with both labels (index and wnid)."""
    wnids = imagenet_synsets()
    differ = [n for n in names if n in first and n in second and first[n] != second[n]]
    if not differ:
        return
    shown = "; ".join(
        f"{n}: {first_source} {first[n]} ({wnids[first[n]]}), {second_source} {second[n]} ({wnids[second[n]]})"
        for n in differ[:show]
    )
    more = f" (first {show} shown)" if len(differ) > show else ""
    raise ManifestError(
        f"dataset {dataset}: the ImageNet val label sources disagree on {len(differ)} of {len(names)} file(s){more}: "
        f"{shown}. Check that the devkit is the official {DEVKIT_ARCHIVE} (its sha256 is checked against the registry "
        "on download) and that the imagenet-x package is intact; or drop one source from the registry's labels_from."
    )
