"""Top-1 accuracy with label-space restriction (docs/methods.md, "Metric definitions")."""

import numpy as np
import pytest

from clip_robustness.datasets.label_spaces import LabelSpace
from clip_robustness.metrics.accuracy import top1_accuracy, top1_correct


def _logits(rows: dict[int, dict[int, float]], n: int) -> np.ndarray:
    """[n, 1000] zeros with the given (row -> {class: logit}) entries set."""
    out = np.zeros((n, 1000), dtype=np.float32)
    for row, entries in rows.items():
        for cls, value in entries.items():
            out[row, cls] = value
    return out


def test_subset_restriction_ignores_classes_outside_the_label_space():
    # Image 0: global argmax is class 7 (5.0), outside the subset {3, 10}; inside it class 3 (2.0) wins -> correct.
    # Image 1: class 10 (1.0) beats class 3 (0.5) inside the subset, true label 3 -> wrong.
    space = LabelSpace("subset", np.array([3, 10]))
    logits = _logits({0: {7: 5.0, 3: 2.0, 10: 1.0}, 1: {7: 9.0, 3: 0.5, 10: 1.0}}, 2)
    labels = np.array([3, 3])
    assert top1_correct(logits, labels, space).tolist() == [True, False]
    assert top1_accuracy(logits, labels, space) == 0.5
    # over all 1000 classes both images predict class 7: accuracy 0
    assert top1_accuracy(logits, labels, LabelSpace.imagenet_1k()) == 0.0


def test_grouped_label_space_counts_any_class_of_the_true_group_as_correct():
    # ObjectNet-style: ImageNet classes 1 and 2 are one class (group 0), class 5 is group 1.
    space = LabelSpace("objectnet_like", np.array([1, 2, 5]), np.array([0, 0, 1]))
    # image 0: true 2, predicts 1 (same group) -> correct; image 1: true 5, predicts 2 -> wrong; image 2: true 1, predicts 1.
    logits = _logits({0: {1: 3.0, 2: 1.0}, 1: {2: 4.0, 5: 1.0}, 2: {1: 2.0}}, 3)
    labels = np.array([2, 5, 1])
    assert top1_correct(logits, labels, space).tolist() == [True, False, True]
    assert top1_accuracy(logits, labels, space) == pytest.approx(2 / 3)


def test_label_outside_the_label_space_raises_naming_the_space():
    space = LabelSpace("imagenet_r", np.array([3, 10]))
    logits = np.zeros((2, 1000), dtype=np.float32)
    with pytest.raises(ValueError, match="imagenet_r"):
        top1_accuracy(logits, np.array([3, 4]), space)


def test_ood_label_minus_one_cannot_be_scored_for_accuracy():
    with pytest.raises(ValueError, match="outside label space"):
        top1_accuracy(np.zeros((1, 1000), dtype=np.float32), np.array([-1]), LabelSpace.imagenet_1k())


def test_logits_without_1000_columns_are_rejected_with_their_shape():
    with pytest.raises(ValueError, match=r"\[2, 10\]"):
        top1_accuracy(np.zeros((2, 10)), np.array([0, 1]), LabelSpace.imagenet_1k())
