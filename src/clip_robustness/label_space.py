"""Label spaces: which ImageNet-1k classes a prediction may take on a dataset, and what counts as correct.

ImageNet-A and ImageNet-R are scored on 200-class subsets (timm's ``imagenet_{a,r}_indices.txt``),
ObjectNet on the ImageNet classes mapped to its 113 shared classes, where several ImageNet classes
map to one ObjectNet class. Subsets are applied at metric time: the cache always holds 1000 logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

N_IMAGENET_CLASSES = 1000


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
        return cls(data["name"], np.asarray(data["class_indices"]), None if data["class_groups"] is None else np.asarray(data["class_groups"]))
