"""How the logits stage is cut into jobs: a few groups of datasets per model, fixed by the study's config.

Every model runs

- one ``cache_logits`` job over the study's *core* datasets (ImageNet val, the test conditions and the OOD
  sets: every dataset that is not an ImageNet-C condition), and
- one ``cache_logits_imagenet_c`` job per ImageNet-C corruption, writing its configured severities,

so the full study has 210 x (1 + 15) = 3,360 logits jobs instead of 210 x 88 = 18,480, and each job builds its
model once (:mod:`clip_robustness.logits.job`). Decoding is cut the same way, per preprocessing geometry: one
``decode_images`` job per geometry writes the core datasets' arrays, one ``decode_images_imagenet_c`` job per
(corruption, geometry) its severities' arrays, so a logits job's inputs appear together and the decoded-disk
budget (:mod:`clip_robustness.logits.budget`) reserves a whole group at once.

The groups follow the config, not the disk: adding a dataset adds an output to its group's job; Snakemake then
reruns that job, which keeps every output that is still current and computes only the new file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Group id of the core datasets (every dataset of the study that is not an ImageNet-C condition).
CORE_GROUP = "core"


def imagenet_c_id(corruption: str, severity: int) -> str:
    """The dataset id of one ImageNet-C condition (the registry's ``id_format``)."""
    return f"imagenet_c_{corruption}_{severity}"


@dataclass(frozen=True)
class LogitsGroups:
    """The groups of datasets one logits job covers.

    ``core``: dataset ids of the core group, in study order; ``corruptions``/``severities``: the configured
    ImageNet-C corruptions and severities (each corruption is one group of ``len(severities)`` datasets).
    """

    core: tuple[str, ...]
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]

    @classmethod
    def from_study(cls, dataset_ids: Sequence[str], imagenet_c: Mapping[str, Any] | None) -> "LogitsGroups":
        """The groups of a study: ``dataset_ids`` (``Study.dataset_ids``) and config ``datasets.imagenet_c``."""
        imagenet_c = imagenet_c or {}
        corruptions = tuple(dict.fromkeys(imagenet_c.get("corruptions") or []))
        severities = tuple(dict.fromkeys(int(s) for s in imagenet_c.get("severities") or []))
        if not severities:
            corruptions = ()
        c_ids = {imagenet_c_id(c, s) for c in corruptions for s in severities}
        core = tuple(d for d in dataset_ids if d not in c_ids)
        return cls(core=core, corruptions=corruptions, severities=severities)

    def imagenet_c_ids(self, corruption: str) -> list[str]:
        """The dataset ids of ``corruption``'s group, in severity order."""
        return [imagenet_c_id(corruption, s) for s in self.severities]

    def groups(self) -> dict[str, list[str]]:
        """Group id -> dataset ids: ``core`` first, then one group per corruption (its id is the corruption)."""
        groups = {CORE_GROUP: list(self.core)} if self.core else {}
        groups.update({c: self.imagenet_c_ids(c) for c in self.corruptions})
        return groups

    def group_of(self, dataset: str) -> str:
        """The group id of ``dataset`` (``KeyError`` naming it if the study does not have it)."""
        for group, datasets in self.groups().items():
            if dataset in datasets:
                return group
        raise KeyError(f"dataset {dataset!r} is in no logits group of this study")

    def jobs_per_model(self) -> int:
        """Logits jobs each model runs."""
        return len(self.groups())
