"""What one configuration asks for: which models, which datasets in which role.

The Snakemake workflow builds one :class:`Study` from the validated config and the two registries
and asks it for its targets; nothing here touches the file system or imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from clip_robustness.names import IMAGENET_C_DATASET, IMAGENET_C_PATTERN, imagenet_c_dataset_ids


class ConfigError(ValueError):
    """The config names something the registries do not know, or is inconsistent."""


class _DatasetRegistry(Protocol):
    def resolve(self, dataset_id: str) -> Any: ...


class _ModelRegistry(Protocol):
    def select(self, ids_or_all: str | Sequence[str]) -> list[str]: ...


def fold_imagenet_c(datasets: Sequence[str]) -> list[str]:
    """``datasets`` with every ImageNet-C id replaced by the one :data:`IMAGENET_C_DATASET` condition (at the
    place of the first), other ids kept in order."""
    return list(dict.fromkeys(IMAGENET_C_DATASET if IMAGENET_C_PATTERN.match(d) else d for d in datasets))


@dataclass(frozen=True)
class Study:
    """The models and datasets of one run.

    ``in_distribution``: the ImageNet val dataset id (ID set for calibration and OOD detection).
    ``test_conditions``: dataset ids of the distribution shifts (ImageNet-C expanded).
    ``ood_datasets``: dataset ids of the out-of-distribution sets (label -1).
    ``cue_conflict``: dataset ids of cue-conflict stimuli (layout ``cue_conflict``), scored for shape bias only.
    """

    model_ids: tuple[str, ...]
    in_distribution: str
    test_conditions: tuple[str, ...]
    ood_datasets: tuple[str, ...]
    cue_conflict: tuple[str, ...] = ()

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        dataset_registry: _DatasetRegistry,
        model_registry: _ModelRegistry,
    ) -> "Study":
        datasets = config["datasets"]
        imagenet_c = datasets.get("imagenet_c") or {"corruptions": [], "severities": []}
        test_conditions = list(datasets["test_conditions"]) + imagenet_c_dataset_ids(
            imagenet_c["corruptions"], imagenet_c["severities"]
        )
        study = cls(
            model_ids=tuple(model_registry.select(config["models"])),
            in_distribution=datasets["in_distribution"],
            test_conditions=tuple(test_conditions),
            ood_datasets=tuple(datasets["ood"]),
            cue_conflict=tuple(datasets.get("cue_conflict") or ()),
        )
        study._check_datasets(dataset_registry)
        return study

    @property
    def dataset_ids(self) -> list[str]:
        """Every dataset the run needs, in role order, without repeats."""
        return list(
            dict.fromkeys([self.in_distribution, *self.test_conditions, *self.ood_datasets, *self.cue_conflict])
        )

    def _check_datasets(self, dataset_registry: _DatasetRegistry) -> None:
        duplicates = sorted({d for d in self.test_conditions if self.test_conditions.count(d) > 1})
        if duplicates:
            raise ConfigError(f"config datasets.test_conditions lists {duplicates} more than once")
        overlap = sorted(set(self.ood_datasets) & ({self.in_distribution} | set(self.test_conditions)))
        if overlap:
            raise ConfigError(f"config datasets: {overlap} is both an OOD set and a labelled set")
        for dataset_id in self.dataset_ids:
            entry = dataset_registry.resolve(dataset_id)  # raises UnknownDatasetError naming the id
            if (dataset_id in self.cue_conflict) != (getattr(entry, "layout", None) == "cue_conflict"):
                raise ConfigError(
                    f"config datasets: {dataset_id!r} goes in datasets.cue_conflict exactly when its "
                    f"registry layout is cue_conflict (it is {getattr(entry, 'layout', None)!r})"
                )
            is_ood = bool(getattr(entry, "is_ood", False))
            if dataset_id in self.ood_datasets and not is_ood:
                raise ConfigError(
                    f"config datasets.ood lists {dataset_id!r}, whose registry entry has labels (not OOD)"
                )
            if dataset_id not in self.ood_datasets and is_ood:
                raise ConfigError(
                    f"config datasets lists {dataset_id!r} as a labelled set, but its registry entry is OOD: "
                    "move it to datasets.ood"
                )
