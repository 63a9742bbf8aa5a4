"""ImageNet-C at the user's cost: a deterministic, seeded, class-balanced subset of each (corruption, severity).

Config ``datasets.imagenet_c.images_per_condition`` (``null``: all 50,000 images, the paper) and
``datasets.imagenet_c.subset_seed``. Every condition keeps the *same* source images: an image is chosen by the rank
of ``sha256(f"{seed}\\t{path}")`` among the images of its class, and ``path`` (``{wnid}/{file}``, relative to the
condition's folder) is the same in every corruption and severity. Each class gets ``n // n_classes`` images, and
the ``n % n_classes`` classes that rank first by ``sha256(f"{seed}\\tclass\\t{label}")`` one more (a class with fewer
images gives all it has). The manifest records the subset (:func:`subset_record`), so its hash differs from the
full manifest's, and the logits cache metadata records it too: a subset cache is never taken for the full one.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

#: Name of the selection rule, recorded in the manifest and the cache metadata.
SUBSET_METHOD = "class_balanced_sha256_rank"


def _rank(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}\t{text}".encode("utf-8")).hexdigest()


def class_balanced_subset(paths: Sequence[str], labels: Sequence[int], n: int, seed: int) -> list[int]:
    """Positions (ascending, i.e. manifest order) of the ``n`` images to keep, balanced over the labels.

    ``paths``: each image's path relative to its condition's folder (the same in every condition);
    ``labels``: its ImageNet-1k class index; ``n``: images to keep (all of them when ``n >= len(paths)``);
    ``seed``: selection seed. Deterministic: the same inputs give the same positions on every machine.
    """
    if n < 1:
        raise ValueError(f"images_per_condition must be >= 1, got {n}")
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    if n >= len(paths):
        return list(range(len(paths)))
    by_class: dict[int, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        by_class[int(label)].append(position)
    classes = sorted(by_class, key=lambda label: _rank(seed, f"class\t{label}"))
    base, extra = divmod(n, len(classes))
    quota = {label: base + (1 if i < extra else 0) for i, label in enumerate(classes)}
    keep = []
    for label, positions in by_class.items():
        ranked = sorted(positions, key=lambda p: _rank(seed, paths[p]))
        keep += ranked[: quota[label]]
    return sorted(keep)


def subset_record(n_requested: int, seed: int, n_available: int, n_kept: int) -> dict[str, Any]:
    """The ``subset`` entry of a manifest's metadata (copied into the cache metadata as ``manifest_subset``)."""
    return {
        "method": SUBSET_METHOD,
        "images_per_condition": int(n_requested),
        "seed": int(seed),
        "n_available": int(n_available),
        "n_kept": int(n_kept),
    }


def imagenet_c_subset_param(dataset: str, imagenet_c_ids: Sequence[str], imagenet_c_config: dict | None) -> dict | None:
    """The ``subset`` argument of the manifest build for ``dataset``: ``{"images_per_condition", "seed"}`` when it is
    an ImageNet-C condition of the study and config ``images_per_condition`` is set, else ``None`` (all images)."""
    config = imagenet_c_config or {}
    n = config.get("images_per_condition")
    if n is None or dataset not in set(imagenet_c_ids):
        return None
    return {"images_per_condition": int(n), "seed": int(config.get("subset_seed", 0))}
