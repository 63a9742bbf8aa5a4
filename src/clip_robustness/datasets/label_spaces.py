"""Label spaces of the datasets, from the class files that ship with timm and with ObjectNet.

ImageNet-1k index = position of the wnid in timm's ``imagenet_synsets.txt`` (the sorted wnid order
every ImageNet classifier uses). ImageNet-A/R: the 200 indices in timm's
``imagenet_{a,r}_indices.txt``. ObjectNet: the ImageNet classes mapped to its 113 shared classes,
read from the ``mappings/`` folder inside the ObjectNet archive itself.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from clip_robustness.datasets.errors import ManifestError, RegistryError
from clip_robustness.names import NUM_CLASSES

#: The ImageNet-1k class count (:data:`clip_robustness.names.NUM_CLASSES`), under its older name.
N_IMAGENET_CLASSES = NUM_CLASSES


@dataclass(frozen=True, eq=False)
class LabelSpace:
    """The classes a prediction may take, and the group each one counts as.

    ``class_indices``: sorted ImageNet-1k indices (int64) the argmax is restricted to.
    ``class_groups``: same length; a prediction of ``class_indices[i]`` is correct when
    ``class_groups[i]`` equals the group of the true label (ObjectNet: its ObjectNet class id).
    ``None`` means each class is its own group (plain top-1 within the subset).
    """

    name: str
    class_indices: np.ndarray
    class_groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        indices = np.asarray(self.class_indices, dtype=np.int64)
        if indices.ndim != 1 or len(indices) == 0:
            raise ValueError(f"label space {self.name!r}: class_indices must be a non-empty 1-d array")
        if np.any(np.diff(indices) <= 0) or indices[0] < 0 or indices[-1] >= N_IMAGENET_CLASSES:
            raise ValueError(f"label space {self.name!r}: class_indices must be sorted, unique, in [0, 1000)")
        object.__setattr__(self, "class_indices", indices)
        if self.class_groups is not None:
            groups = np.asarray(self.class_groups, dtype=np.int64)
            if groups.shape != indices.shape:
                raise ValueError(f"label space {self.name!r}: class_groups must match class_indices in length")
            object.__setattr__(self, "class_groups", groups)

    @classmethod
    def imagenet_1k(cls) -> "LabelSpace":
        return cls("imagenet1k", np.arange(N_IMAGENET_CLASSES))

    @property
    def is_full(self) -> bool:
        return len(self.class_indices) == N_IMAGENET_CLASSES and self.class_groups is None

    def group_of_label(self, labels: np.ndarray) -> np.ndarray:
        """The group (for scoring) of each true ImageNet-1k label; -1 for labels outside the space."""
        lookup = np.full(N_IMAGENET_CLASSES, -1, dtype=np.int64)
        lookup[self.class_indices] = self.class_indices if self.class_groups is None else self.class_groups
        labels = np.asarray(labels, dtype=np.int64)
        out = np.full(labels.shape, -1, dtype=np.int64)
        valid = labels >= 0
        out[valid] = lookup[labels[valid]]
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "class_indices": self.class_indices.tolist(),
                "class_groups": None if self.class_groups is None else self.class_groups.tolist(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "LabelSpace":
        data = json.loads(text)
        return cls(
            data["name"],
            np.asarray(data["class_indices"]),
            None if data["class_groups"] is None else np.asarray(data["class_groups"]),
        )


#: Files of ObjectNet's ``mappings/`` folder that :func:`objectnet_mapping` reads.
OBJECTNET_MAPPING_FILES = (
    "folder_to_objectnet_label.json",
    "objectnet_to_imagenet_1k.json",
    "imagenet_to_label_2012_v2",
    "pytorch_to_imagenet_2012_id.json",
)


def package_file(package: str, relative: str) -> Path:
    """Path of a data file shipped inside an installed package, found without importing the package
    (importing timm would import torch)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for {relative})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"package {package!r} does not ship {relative} (looked at {path})")
    return path


def _timm_info_lines(name: str) -> list[str]:
    text = package_file("timm", f"data/_info/{name}").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (timm's ``imagenet_synsets.txt``)."""
    wnids = tuple(_timm_info_lines("imagenet_synsets.txt"))
    assert len(wnids) == N_IMAGENET_CLASSES and list(wnids) == sorted(wnids)
    return wnids


@lru_cache(maxsize=1)
def wnid_to_index() -> Mapping[str, int]:
    """wnid -> ImageNet-1k class index (0..999)."""
    return {wnid: i for i, wnid in enumerate(imagenet_synsets())}


@lru_cache(maxsize=1)
def imagenet_descriptions() -> tuple[str, ...]:
    """The 1000 class descriptions (WordNet lemmas, e.g. ``"tench, Tinca tinca"``) in class-index order."""
    lemmas = dict(line.split("\t", 1) for line in _timm_info_lines("imagenet_synset_to_lemma.txt"))
    return tuple(lemmas[w] for w in imagenet_synsets())


def imagenet_a_indices() -> list[int]:
    """The 200 ImageNet-1k indices of ImageNet-A (timm's ``imagenet_a_indices.txt``), sorted."""
    return sorted(int(x) for x in _timm_info_lines("imagenet_a_indices.txt"))


def imagenet_r_indices() -> list[int]:
    """The 200 ImageNet-1k indices of ImageNet-R (timm's ``imagenet_r_indices.txt``), sorted."""
    return sorted(int(x) for x in _timm_info_lines("imagenet_r_indices.txt"))


@dataclass(frozen=True)
class ObjectNetMapping:
    """ObjectNet's classes that are shared with ImageNet.

    ``folder_to_indices``: image folder name (e.g. ``alarm_clock``) -> sorted ImageNet-1k indices
    that count as correct for it (one or more). ``folder_to_label``: folder -> ObjectNet class name.
    ``group_of_folder``: folder -> ObjectNet class id (0..n-1, sorted folder order) used as the
    scoring group. Folders of unmapped ObjectNet classes are in none of these.
    """

    folder_to_indices: Mapping[str, tuple[int, ...]]
    folder_to_label: Mapping[str, str]
    group_of_folder: Mapping[str, int]

    def label_of_folder(self, folder: str) -> int:
        """Manifest label of an image in ``folder``: the smallest mapped ImageNet-1k index."""
        return min(self.folder_to_indices[folder])

    def label_space(self) -> LabelSpace:
        """The ``objectnet`` label space: mapped indices, each grouped by its ObjectNet class id."""
        pairs = sorted((i, self.group_of_folder[f]) for f, idx in self.folder_to_indices.items() for i in idx)
        return LabelSpace("objectnet", np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))


def objectnet_mapping(mappings_dir: str | Path) -> ObjectNetMapping:
    """Read ObjectNet's class mapping from the ``mappings/`` folder that ships inside its archive.

    ``objectnet_to_imagenet_1k.json`` maps an ObjectNet class name to ImageNet class names
    separated by ``"; "``; those names are lines of ``imagenet_to_label_2012_v2`` (line i = ImageNet
    2012 id i), and ``pytorch_to_imagenet_2012_id.json`` maps a class index (0..999, sorted-wnid
    order) to that 2012 id. Raises :class:`ManifestError` naming the file and the value at fault.
    """
    mappings_dir = Path(mappings_dir)
    missing = [name for name in OBJECTNET_MAPPING_FILES if not (mappings_dir / name).is_file()]
    if missing:
        raise ManifestError(
            f"ObjectNet mapping folder {mappings_dir} lacks {missing} (they ship in objectnet-1.0/mappings/)"
        )
    folder_to_label = json.loads((mappings_dir / "folder_to_objectnet_label.json").read_text())
    objectnet_to_names = json.loads((mappings_dir / "objectnet_to_imagenet_1k.json").read_text())
    name_to_indices = _imagenet_name_to_indices(mappings_dir)
    label_to_folder = {label: folder for folder, label in folder_to_label.items()}
    folder_to_indices = _objectnet_folder_to_indices(mappings_dir, objectnet_to_names, label_to_folder, name_to_indices)
    _check_no_imagenet_class_shared(mappings_dir, folder_to_indices)
    groups = {folder: g for g, folder in enumerate(sorted(folder_to_indices))}
    return ObjectNetMapping(folder_to_indices, {f: folder_to_label[f] for f in folder_to_indices}, groups)


def _imagenet_name_to_indices(mappings_dir: Path) -> dict[str, list[int]]:
    """ImageNet class name (a line of ``imagenet_to_label_2012_v2``) -> the class indices (0..999) it names."""
    names_2012 = [line.rstrip("\n") for line in (mappings_dir / "imagenet_to_label_2012_v2").read_text().splitlines()]
    index_to_2012 = {
        int(k): int(v) for k, v in json.loads((mappings_dir / "pytorch_to_imagenet_2012_id.json").read_text()).items()
    }
    if sorted(index_to_2012) != list(range(N_IMAGENET_CLASSES)) or sorted(index_to_2012.values()) != list(
        range(len(names_2012))
    ):
        raise ManifestError(
            f"{mappings_dir / 'pytorch_to_imagenet_2012_id.json'}: not a bijection of 0..999 onto the lines of imagenet_to_label_2012_v2"
        )
    index_of_2012 = {v: k for k, v in index_to_2012.items()}
    name_to_indices: dict[str, list[int]] = {}
    for line_number, name in enumerate(names_2012):
        name_to_indices.setdefault(name.strip(), []).append(index_of_2012[line_number])
    return name_to_indices


def _objectnet_folder_to_indices(
    mappings_dir: Path,
    objectnet_to_names: dict[str, str],
    label_to_folder: dict[str, str],
    name_to_indices: dict[str, list[int]],
) -> dict[str, tuple[int, ...]]:
    """ObjectNet folder -> the sorted ImageNet class indices its ``"; "``-separated class names map to."""
    folder_to_indices: dict[str, tuple[int, ...]] = {}
    for label, names in objectnet_to_names.items():
        if label not in label_to_folder:
            raise ManifestError(
                f"{mappings_dir / 'objectnet_to_imagenet_1k.json'}: class {label!r} has no folder in folder_to_objectnet_label.json"
            )
        indices = []
        for name in (n.strip() for n in names.split(";")):
            found = name_to_indices.get(name)
            if not found:
                raise ManifestError(
                    f"{mappings_dir / 'objectnet_to_imagenet_1k.json'}: ImageNet class name {name!r} (for {label!r}) is not a line of imagenet_to_label_2012_v2"
                )
            if len(found) > 1:
                raise ManifestError(
                    f"{mappings_dir / 'objectnet_to_imagenet_1k.json'}: ImageNet class name {name!r} (for {label!r}) is ambiguous: classes {found}"
                )
            indices.append(found[0])
        folder_to_indices[label_to_folder[label]] = tuple(sorted(indices))
    return folder_to_indices


def _check_no_imagenet_class_shared(mappings_dir: Path, folder_to_indices: dict[str, tuple[int, ...]]) -> None:
    """Raise :class:`ManifestError` when one ImageNet class is mapped from two ObjectNet folders."""
    seen: dict[int, str] = {}
    for folder, indices in folder_to_indices.items():
        for index in indices:
            if index in seen:
                raise ManifestError(
                    f"ObjectNet mapping {mappings_dir}: ImageNet class {index} is mapped from both {seen[index]!r} and {folder!r}"
                )
            seen[index] = folder


def label_space_named(name: str, dataset_root: str | Path | None = None) -> LabelSpace:
    """The label space ``name`` of the registry (``imagenet1k``, ``imagenet_r``, ``imagenet_a``,
    ``objectnet``, ``ood``). ``objectnet`` needs ``dataset_root`` (the ``objectnet-1.0`` folder).
    ``ood`` is the full 1000-class space named ``ood`` (OOD scores use all 1000 logits)."""
    if name == "imagenet1k":
        return LabelSpace.imagenet_1k()
    if name == "ood":
        return LabelSpace("ood", np.arange(N_IMAGENET_CLASSES))
    if name == "imagenet_r":
        return LabelSpace("imagenet_r", np.array(imagenet_r_indices()))
    if name == "imagenet_a":
        return LabelSpace("imagenet_a", np.array(imagenet_a_indices()))
    if name == "objectnet":
        if dataset_root is None:
            raise ValueError("the objectnet label space is read from the archive: pass dataset_root")
        return objectnet_mapping(Path(dataset_root) / "mappings").label_space()
    raise RegistryError(f"unknown label space {name!r}")
