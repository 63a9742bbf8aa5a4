"""How the logits stage is cut into jobs: a few groups of datasets per model, fixed by the study's config.

Every model runs

- one ``cache_logits`` job over the study's *core* datasets (ImageNet val, the test conditions and the OOD
  sets: every dataset that is not an ImageNet-C condition), and
- ``cache_logits_imagenet_c`` jobs over the ImageNet-C conditions, cut by config ``inference.imagenet_c_jobs``:
  ``per_severity`` (the default) one job per severity over every corruption (15 datasets), ``per_corruption`` one
  job per corruption over its severities (5 datasets).

So the full study has 210 x (1 + 5) = 1,260 logits jobs (``per_corruption``: 210 x 16 = 3,360) instead of
210 x 88 = 18,480, and each job builds its model once (:mod:`clip_robustness.logits.job`). Decoding is cut the same
way, per preprocessing geometry: one ``decode_images`` job per geometry writes the core datasets' arrays, one
``decode_images_imagenet_c`` job per (ImageNet-C group, geometry) its conditions' arrays, so a logits job's inputs
appear together and the decoded-disk budget (:mod:`clip_robustness.logits.budget`) reserves a whole group at once.
The cut trades DAG size and start-ups against decoded disk: a ``per_severity`` group holds 15 arrays at once
(113 GB at 224 px with 50,000 images each), a ``per_corruption`` group 5 (38 GB); docs/performance.md.

The groups follow the config, not the disk: adding a dataset adds an output to its group's job; Snakemake then
reruns that job, which keeps every output that is still current and computes only the new file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clip_robustness.names import imagenet_c_id

#: Group id of the core datasets (every dataset of the study that is not an ImageNet-C condition).
CORE_GROUP = "core"

#: The values of config ``inference.imagenet_c_jobs``: how a model's ImageNet-C conditions are cut into jobs.
IMAGENET_C_CUTS = ("per_severity", "per_corruption")


@dataclass(frozen=True)
class LogitsGroups:
    """The groups of datasets one logits job covers.

    ``core``: dataset ids of the core group, in study order; ``corruptions``/``severities``: the configured
    ImageNet-C corruptions and severities; ``cut``: one of :data:`IMAGENET_C_CUTS`. An ImageNet-C group's id is its
    severity (``"3"``, ``per_severity``: every corruption at that severity) or its corruption (``"fog"``,
    ``per_corruption``: that corruption at every severity).
    """

    core: tuple[str, ...]
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    cut: str = "per_severity"

    def __post_init__(self) -> None:
        if self.cut not in IMAGENET_C_CUTS:
            raise ValueError(f"inference.imagenet_c_jobs is {self.cut!r}; expected one of {list(IMAGENET_C_CUTS)}")

    @classmethod
    def from_study(
        cls, dataset_ids: Sequence[str], imagenet_c: Mapping[str, Any] | None, cut: str = "per_severity"
    ) -> "LogitsGroups":
        """The groups of a study: ``dataset_ids`` (``Study.dataset_ids``), config ``datasets.imagenet_c`` and
        ``inference.imagenet_c_jobs`` (``cut``)."""
        imagenet_c = imagenet_c or {}
        corruptions = tuple(dict.fromkeys(imagenet_c.get("corruptions") or []))
        severities = tuple(dict.fromkeys(int(s) for s in imagenet_c.get("severities") or []))
        if not severities or not corruptions:
            corruptions, severities = (), ()
        c_ids = {imagenet_c_id(c, s) for c in corruptions for s in severities}
        core = tuple(d for d in dataset_ids if d not in c_ids)
        return cls(core=core, corruptions=corruptions, severities=severities, cut=cut)

    def imagenet_c_groups(self) -> list[str]:
        """The ImageNet-C group ids, in config order: the severities (as text) or the corruptions."""
        if self.cut == "per_severity":
            return [str(s) for s in self.severities]
        return list(self.corruptions)

    def imagenet_c_ids(self, group: str) -> list[str]:
        """The dataset ids of ImageNet-C group ``group``: every corruption at severity ``group`` (``per_severity``),
        or corruption ``group`` at every severity (``per_corruption``). ``KeyError`` naming it if there is none."""
        if group not in self.imagenet_c_groups():
            raise KeyError(f"{group!r} is no ImageNet-C group of this study ({self.cut}: {self.imagenet_c_groups()})")
        if self.cut == "per_severity":
            return [imagenet_c_id(c, int(group)) for c in self.corruptions]
        return [imagenet_c_id(group, s) for s in self.severities]

    def all_imagenet_c_ids(self) -> list[str]:
        """Every ImageNet-C condition of the study, group by group."""
        return [d for group in self.imagenet_c_groups() for d in self.imagenet_c_ids(group)]

    def condition_patterns(self, wildcard: str) -> list[str]:
        """The dataset ids of one ImageNet-C group job as Snakemake patterns over the group wildcard ``wildcard``:
        ``imagenet_c_fog_{wildcard}`` for each corruption (``per_severity``) or ``imagenet_c_{wildcard}_3`` for each
        severity (``per_corruption``); the rules' outputs expand these."""
        if self.cut == "per_severity":
            return [imagenet_c_id(c, f"{{{wildcard}}}") for c in self.corruptions]
        return [imagenet_c_id(f"{{{wildcard}}}", s) for s in self.severities]

    def groups(self) -> dict[str, list[str]]:
        """Group id -> dataset ids: ``core`` first, then each ImageNet-C group."""
        groups = {CORE_GROUP: list(self.core)} if self.core else {}
        groups.update({g: self.imagenet_c_ids(g) for g in self.imagenet_c_groups()})
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
