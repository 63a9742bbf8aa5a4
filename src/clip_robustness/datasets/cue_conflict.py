"""The cue-conflict stimuli (model-vs-human, Geirhos et al. ICLR 2019): layout, file names and the category mapping.

Layout (model-vs-human's loader: ``torchvision`` ``ImageFolder`` over ``datasets/cue-conflict``, with the category
read from the parent folder by ``ImageNetInfoMapping``, ``modelvshuman/datasets/info_mappings.py``)::

    cue-conflict/<shape category>/<shape category><n>-<texture category><m>.png

The shape category is the folder; the texture category is read from the file name the way model-vs-human's
``ShapeBias.get_texture_category`` does (``modelvshuman/plotting/analyses.py``): the part after the last ``_``,
without its extension, the part after the last ``-``, without digits (``airplane1-bicycle2.png`` -> ``bicycle``).

Categories map onto ImageNet-1k indices by a category mapping: a TSV ``category<TAB>i,j,k`` (``#`` lines are
comments). The real one, model-vs-human's 16 categories, ships as the package resource
:data:`MODEL_VS_HUMAN_MAPPING`; the demo writes its own (its models know only the demo's classes). The manifest's
label is the shape category's smallest ImageNet index, and its label space pools each category's indices (class
group = category position), like ObjectNet's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from clip_robustness.datasets.errors import ManifestError
from clip_robustness.names import NUM_CLASSES

#: Registry value of ``category_mapping`` that names the shipped model-vs-human mapping (the default).
MODEL_VS_HUMAN_MAPPING = "model_vs_human_16"
_RESOURCE = "model_vs_human_16_categories.tsv"


@dataclass(frozen=True)
class CategoryMapping:
    """Categories (sorted by name, as model-vs-human sorts them) and the ImageNet-1k indices each one pools."""

    categories: tuple[str, ...]
    indices: tuple[tuple[int, ...], ...]
    source: str = ""

    def __post_init__(self) -> None:
        if list(self.categories) != sorted(self.categories) or len(set(self.categories)) != len(self.categories):
            raise ValueError(f"category mapping {self.source}: categories must be unique and sorted by name")
        seen: dict[int, str] = {}
        for category, idx in zip(self.categories, self.indices, strict=True):
            if not category.isalpha() or category != category.lower():
                raise ValueError(f"category mapping {self.source}: category {category!r} must be lower-case letters")
            if not idx:
                raise ValueError(f"category mapping {self.source}: category {category!r} has no ImageNet index")
            for i in idx:
                if not 0 <= i < NUM_CLASSES:
                    raise ValueError(f"category mapping {self.source}: {category!r} index {i} is outside 0..999")
                if i in seen:
                    raise ValueError(
                        f"category mapping {self.source}: index {i} is in both {seen[i]!r} and {category!r}"
                    )
                seen[i] = category

    def position(self, category: str) -> int:
        """Position of ``category`` among :attr:`categories`; :class:`KeyError` naming the known ones."""
        try:
            return self.categories.index(category)
        except ValueError:
            raise KeyError(f"category {category!r} is not one of {list(self.categories)} ({self.source})") from None

    def to_json_dict(self) -> dict[str, list[int]]:
        return {c: list(i) for c, i in zip(self.categories, self.indices)}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Sequence[int]], source: str = "") -> "CategoryMapping":
        names = sorted(data)
        return cls(tuple(names), tuple(tuple(int(i) for i in data[n]) for n in names), source)

    def label_space_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted ImageNet indices of every category, the category position of each): a grouped label space."""
        pairs = sorted((i, k) for k, idx in enumerate(self.indices) for i in idx)
        return np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64)


def parse_category_mapping(text: str, source: str) -> CategoryMapping:
    """A category mapping from TSV text (header ``category<TAB>imagenet_indices``, ``#`` comments)."""
    rows: dict[str, tuple[int, ...]] = {}
    lines = [
        (n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip() and not line.startswith("#")
    ]
    if not lines or lines[0][1].split("\t")[:2] != ["category", "imagenet_indices"]:
        raise ValueError(f"category mapping {source}: the first line must be 'category<TAB>imagenet_indices'")
    for number, line in lines[1:]:
        fields = line.rstrip("\n").split("\t")
        try:
            if len(fields) != 2 or fields[0] in rows:
                raise ValueError
            rows[fields[0]] = tuple(int(i) for i in fields[1].split(","))
        except ValueError:
            raise ValueError(
                f"category mapping {source}, line {number}: expected a new category<TAB>i,j,... got {line!r}"
            ) from None
    return CategoryMapping.from_json_dict(rows, source)


def load_category_mapping(name_or_path: str | Path = MODEL_VS_HUMAN_MAPPING) -> CategoryMapping:
    """The mapping a registry entry's ``category_mapping`` names: :data:`MODEL_VS_HUMAN_MAPPING` (the shipped
    resource) or the path of a TSV file."""
    if str(name_or_path) == MODEL_VS_HUMAN_MAPPING:
        resource = files("clip_robustness") / "resources" / _RESOURCE
        return parse_category_mapping(resource.read_text(encoding="utf-8"), f"clip_robustness/resources/{_RESOURCE}")
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"category mapping {path} does not exist (registry key category_mapping)")
    return parse_category_mapping(path.read_text(encoding="utf-8"), str(path))


def texture_category(file_name: str) -> str:
    """The texture category in a cue-conflict file name, as model-vs-human reads it (``dog10-bird2.png`` and
    ``XXX_dog10-bird2.png`` -> ``bird``)."""
    stem = file_name.rsplit("/", 1)[-1].split("_")[-1].split(".")[0]
    return "".join(ch for ch in stem.split("-")[-1] if not ch.isdigit())


@dataclass(frozen=True)
class CueConflictImage:
    """One stimulus: its path relative to the dataset root, and its shape and texture categories."""

    path: str
    shape: str
    texture: str


def list_cue_conflict(root: Path, mapping: CategoryMapping, dataset: str = "cue_conflict") -> list[CueConflictImage]:
    """Every ``<shape>/<file>.png`` under ``root``, sorted by path (the shape is the folder, as model-vs-human's loader
    reads it); :class:`ManifestError` names a folder or file whose category is not in ``mapping``."""
    images = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        if folder.name not in mapping.categories:
            raise ManifestError(
                f"dataset {dataset}: folder {folder} is not a category of {mapping.source} "
                f"({list(mapping.categories)}) (layout cue_conflict)"
            )
        for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            if file.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                continue
            texture = texture_category(file.name)
            if texture not in mapping.categories:
                raise ManifestError(
                    f"dataset {dataset}: {file}: texture category {texture!r} (from the file name) is "
                    f"not one of {list(mapping.categories)} (layout cue_conflict: <shape><n>-<texture><m>.png)"
                )
            images.append(CueConflictImage(file.relative_to(root).as_posix(), folder.name, texture))
    return images
