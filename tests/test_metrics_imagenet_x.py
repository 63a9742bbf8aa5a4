"""ImageNet-X factor accuracy, error ratio and effective robustness, cross-checked with imagenet_x."""

import imagenet_x
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from clip_robustness.metrics.imagenet_x import (
    IMAGENET_X_FACTORS,
    effective_robustness,
    error_ratios,
    factor_accuracies,
    load_imagenet_x_annotations,
)


@pytest.fixture(scope="module")
def annotations() -> pd.DataFrame:
    return load_imagenet_x_annotations()


@pytest.fixture(scope="module")
def val_predictions() -> pd.DataFrame:
    """All 50k ImageNet val file names (the wheel's filename_label.csv) with synthetic predictions."""
    val = pd.read_csv(imagenet_x.utils.get_annotation_path() / "filename_label.csv")
    rng = np.random.default_rng(0)
    wrong = rng.random(len(val)) < 0.3
    predicted = val["label"].to_numpy().copy()
    predicted[wrong] = (predicted[wrong] + rng.integers(1, 1000, wrong.sum())) % 1000
    return val.assign(predicted_class=predicted)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Constructing a DataFrame")
def test_factor_accuracy_and_error_ratio_equal_imagenet_x_functions(annotations, val_predictions):
    ours = factor_accuracies(val_predictions["file_name"], val_predictions["predicted_class"].to_numpy(), annotations)
    ours_ratio = error_ratios(ours["accuracy"])

    model = val_predictions[["file_name", "predicted_class"]].assign(predicted_probability=1.0)
    augmented = imagenet_x.augment_model_predictions(annotations, {"m": model})
    theirs = imagenet_x.compute_factor_accuracies(augmented, imagenet_x.FACTORS)
    theirs_ratio = imagenet_x.error_ratio(theirs)

    for factor in IMAGENET_X_FACTORS:
        assert ours.loc[factor, "accuracy"] == pytest.approx(theirs.loc["m", factor], rel=1e-12)
        assert ours_ratio[factor] == pytest.approx(theirs_ratio.loc["m", factor], rel=1e-12)
    assert ours.loc["all", "accuracy"] == pytest.approx(theirs.loc["m", "average"], rel=1e-12)
    assert ours.loc["all", "n_images"] == len(annotations)


def test_images_without_annotation_are_ignored(annotations, val_predictions):
    annotated = val_predictions[val_predictions["file_name"].isin(annotations["file_name"])]
    everything = factor_accuracies(
        val_predictions["file_name"], val_predictions["predicted_class"].to_numpy(), annotations
    )
    only_annotated = factor_accuracies(annotated["file_name"], annotated["predicted_class"].to_numpy(), annotations)
    pd.testing.assert_frame_equal(everything, only_annotated)


def test_error_ratio_is_one_when_factor_accuracy_equals_overall_accuracy():
    ratios = error_ratios(pd.Series({"pose": 0.7, "texture": 0.4, "all": 0.7}))
    assert ratios["pose"] == 1.0
    # texture: (1 - .4) / (1 - .7) = .6 / .3 = 2
    assert ratios["texture"] == pytest.approx(2.0)


def test_factor_without_images_has_nan_accuracy(annotations):
    names = annotations.loc[annotations["pose"] == 1, "file_name"].head(5)
    result = factor_accuracies(names, np.zeros(5, dtype=int), annotations, factors=("pose", "texture"))
    assert result.loc["pose", "n_images"] == 5 and result.loc["texture", "n_images"] == 0
    assert np.isnan(result.loc["texture", "accuracy"])


def test_unknown_factor_is_named_in_the_error(annotations):
    with pytest.raises(ValueError, match="'glare'"):
        factor_accuracies(["x.JPEG"], np.zeros(1, dtype=int), annotations, factors=("glare",))


def test_effective_robustness_is_the_distance_to_the_logit_space_trend_of_reference_models():
    # reference models lie exactly on logit(acc_pose) = logit(acc_all) - 0.5
    acc_all = np.array([0.6, 0.7, 0.8, 0.75])
    on_line = expit(logit(acc_all) - 0.5)
    table = pd.DataFrame({"all": acc_all, "pose": on_line}, index=["s1", "s2", "s3", "clip"])
    table.loc["clip", "pose"] = 0.74  # the CLIP model beats the trend
    result = effective_robustness(table, ["s1", "s2", "s3"])
    np.testing.assert_allclose(result.loc[["s1", "s2", "s3"], "pose"], 0.0, atol=1e-12)
    assert result.loc["clip", "pose"] == pytest.approx(0.74 - expit(logit(0.75) - 0.5), abs=1e-12)


def test_effective_robustness_needs_two_reference_models():
    table = pd.DataFrame({"all": [0.6, 0.7], "pose": [0.5, 0.6]}, index=["s1", "clip"])
    assert effective_robustness(table, ["s1"])["pose"].isna().all()
