"""Top-1 accuracy with the dataset's label space applied at metric time (docs/methods.md, "Metric definitions").

Logits always hold the 1000 ImageNet-1k classes (the cache is label-space free). A dataset scored
on a subset (ImageNet-A/R: 200 classes) restricts the argmax to that subset; ObjectNet also maps
several ImageNet classes onto one ObjectNet class, and a prediction counts as correct when the
predicted class falls in the true label's group (see :class:`clip_robustness.datasets.label_spaces.LabelSpace`).
"""

from __future__ import annotations

import numpy as np

from clip_robustness.datasets.label_spaces import N_IMAGENET_CLASSES, LabelSpace


def check_logits_and_labels(logits: np.ndarray, labels: np.ndarray, what: str = "logits") -> None:
    """Raise ``ValueError`` unless ``logits`` is ``[n, 1000]`` and ``labels`` is ``[n]``."""
    if logits.ndim != 2 or logits.shape[1] != N_IMAGENET_CLASSES:
        raise ValueError(f"{what}: expected logits of shape [n, {N_IMAGENET_CLASSES}], got {list(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"{what}: {logits.shape[0]} logit rows but labels of shape {list(labels.shape)}")


def restrict_logits(logits: np.ndarray, label_space: LabelSpace) -> np.ndarray:
    """The columns of ``logits`` [n, 1000] that belong to ``label_space`` ([n, k], same dtype).

    Column ``j`` of the result is ImageNet class ``label_space.class_indices[j]``. The full
    1000-class space returns ``logits`` itself (no copy).
    """
    if label_space.is_full:
        return logits
    return logits[:, label_space.class_indices]


def true_groups(labels: np.ndarray, label_space: LabelSpace, what: str = "labels") -> np.ndarray:
    """The scoring group (int64) of each true ImageNet-1k label in ``label_space``.

    Raises ``ValueError`` naming ``what`` and the label space when a label is -1 (OOD) or lies
    outside the space: such an image cannot be scored and would silently count as an error.
    """
    groups = label_space.group_of_label(labels)
    bad = groups < 0
    if bad.any():
        examples = sorted(set(np.asarray(labels)[bad].tolist()))[:5]
        raise ValueError(
            f"{what}: {int(bad.sum())} of {len(groups)} labels lie outside label space {label_space.name!r} "
            f"(e.g. {examples}); check the manifest's labels and label_space"
        )
    return groups


def predicted_groups(logits: np.ndarray, label_space: LabelSpace) -> np.ndarray:
    """The scoring group (int64) of the top-1 prediction within ``label_space``.

    The argmax runs over the label space's ImageNet classes only; ties go to the lowest class index.
    Without ``class_groups`` the group is the ImageNet-1k index of the predicted class.
    """
    column = np.argmax(restrict_logits(logits, label_space), axis=1)
    groups = label_space.class_indices if label_space.class_groups is None else label_space.class_groups
    return groups[column]


def top1_correct(logits: np.ndarray, labels: np.ndarray, label_space: LabelSpace) -> np.ndarray:
    """Per image, whether the top-1 prediction within ``label_space`` is correct (bool [n])."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    check_logits_and_labels(logits, labels)
    return predicted_groups(logits, label_space) == true_groups(labels, label_space)


def top1_accuracy(logits: np.ndarray, labels: np.ndarray, label_space: LabelSpace) -> float:
    """Top-1 accuracy as a fraction in [0, 1] after restricting ``logits`` [n, 1000] to ``label_space``.

    ``labels`` are ImageNet-1k indices (int, [n]); every one must lie in the label space.
    """
    correct = top1_correct(logits, labels, label_space)
    if len(correct) == 0:
        raise ValueError("top1_accuracy: no images")
    return float(correct.mean())
