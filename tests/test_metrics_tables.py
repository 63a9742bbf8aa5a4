"""Tidy per-model and aggregate metric tables, from arrays and from real cache/manifest files."""

import json
import logging

import imagenet_x
import numpy as np
import pandas as pd
import pytest

from clip_robustness.datasets.label_spaces import LabelSpace
from clip_robustness.datasets.manifest import ManifestBuild, manifest_hash, write_manifest
from clip_robustness.logits.cache import StaleCacheError, expected_metadata, write_logits
from clip_robustness.metrics.accuracy import top1_accuracy
from clip_robustness.metrics.aggregate import aggregate_from_files, aggregate_metrics, imagenet_c_mean_rows
from clip_robustness.metrics.calibration import calibration_split, fit_temperature
from clip_robustness.metrics.imagenet_x import IMAGENET_X_FACTORS, LOGIT_EPS, load_imagenet_x_annotations
from clip_robustness.metrics.model_rows import DatasetLogits, model_metrics_from_files, model_metrics_table
from clip_robustness.metrics.ood import auroc, max_softmax_probability
from clip_robustness.metrics.tidy import (
    MetricSettings,
    MetricsInputError,
    read_metrics_table,
    tidy_frame,
    write_metrics_table,
)

N_ID = 600
SUBSET = LabelSpace("imagenet_r", np.arange(0, 1000, 5))
GROUPED = LabelSpace("objectnet", np.array([1, 2, 5, 7]), np.array([0, 0, 1, 2]))


@pytest.fixture(scope="module")
def annotations() -> pd.DataFrame:
    return load_imagenet_x_annotations()


@pytest.fixture(scope="module")
def val_images(annotations) -> pd.DataFrame:
    """N_ID real ImageNet val file names and labels (the imagenet-x wheel's list), mostly annotated."""
    val = pd.read_csv(imagenet_x.utils.get_annotation_path() / "filename_label.csv")
    return val.sample(N_ID, random_state=0).reset_index(drop=True)


def _logits(labels: np.ndarray, skill: float, seed: int) -> np.ndarray:
    """Float32 [n, 1000] logits whose true class gets a bonus of about ``skill`` (higher = more accurate)."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((len(labels), 1000)).astype(np.float32) * 2
    known = labels >= 0
    out[np.flatnonzero(known), labels[known]] += rng.uniform(0, 2 * skill, known.sum()).astype(np.float32)
    return out


def _model_inputs(val_images: pd.DataFrame, skill: float, seed: int):
    labels = val_images["label"].to_numpy()
    idd = DatasetLogits(
        "imagenet_val",
        _logits(labels, skill, seed),
        labels,
        LabelSpace.imagenet_1k(),
        val_images["file_name"].to_numpy(),
        100.0,
    )
    r_labels = SUBSET.class_indices[np.arange(300) % 200]
    o_labels = np.array([1, 2, 5, 7] * 25)
    tests = [
        DatasetLogits("imagenet_r", _logits(r_labels, skill * 0.6, seed + 1), r_labels, SUBSET, None, 100.0),
        DatasetLogits("objectnet", _logits(o_labels, skill * 0.5, seed + 2), o_labels, GROUPED, None, 100.0),
    ]
    ood = [
        DatasetLogits(
            "sun", _logits(-np.ones(200, dtype=int), 0, seed + 3) * 0.8, -np.ones(200, dtype=int), None, None, 100.0
        )
    ]
    return idd, tests, ood


def test_model_table_has_every_metric_per_dataset_with_values_from_the_metric_functions(val_images, annotations):
    idd, tests, ood = _model_inputs(val_images, skill=6.0, seed=0)
    settings = MetricSettings()
    table = model_metrics_table("m", idd, iter(tests), iter(ood), settings, zero_shot=True, annotations=annotations)
    assert list(table.columns) == ["model", "dataset", "metric", "value", "factor", "score"]
    metrics_of = table.groupby("dataset")["metric"].apply(set).to_dict()
    calibration = {"top1", "ece", "nll", "temperature", "ece_ts", "nll_ts"}
    assert metrics_of["imagenet_val"] == {"top1"}
    assert metrics_of["imagenet_val_id_test"] == calibration
    assert metrics_of["imagenet_r"] == calibration and metrics_of["objectnet"] == calibration
    assert metrics_of["imagenet_x"] == {"top1", "factor_accuracy", "error_ratio"}
    assert metrics_of["sun"] == {"auroc", "fpr95"}
    assert set(table.loc[table["dataset"] == "sun", "score"]) == {"msp", "mcm", "max_logit"}

    def value(dataset, metric, score=None):
        rows = table[(table["dataset"] == dataset) & (table["metric"] == metric)]
        rows = rows[rows["score"].isna()] if score is None else rows[rows["score"] == score]
        assert len(rows) == 1
        return rows["value"].iloc[0]

    calib = calibration_split(idd.file_names, settings.calibration_split_seed)
    t_star = fit_temperature(idd.logits[calib], idd.labels[calib], settings.temperature_range)
    for dataset in ("imagenet_val_id_test", "imagenet_r", "objectnet"):
        assert value(dataset, "temperature") == pytest.approx(t_star)
    assert value("imagenet_val", "top1") == top1_accuracy(idd.logits, idd.labels, LabelSpace.imagenet_1k())
    assert value("imagenet_val_id_test", "top1") == top1_accuracy(
        idd.logits[~calib], idd.labels[~calib], LabelSpace.imagenet_1k()
    )
    assert value("imagenet_r", "top1") == top1_accuracy(tests[0].logits, tests[0].labels, SUBSET)
    assert value("objectnet", "top1") == top1_accuracy(tests[1].logits, tests[1].labels, GROUPED)
    expected_auroc = auroc(max_softmax_probability(idd.logits), max_softmax_probability(ood[0].logits))
    assert value("sun", "auroc", "msp") == pytest.approx(expected_auroc)
    factors = set(table.loc[table["metric"] == "factor_accuracy", "factor"])
    assert factors <= set(IMAGENET_X_FACTORS) and {"pose", "background"} <= factors


def test_classifier_gets_no_mcm_rows(val_images):
    idd, tests, ood = _model_inputs(val_images, skill=6.0, seed=0)
    table = model_metrics_table("m", idd, tests, ood, MetricSettings(), zero_shot=False)
    assert set(table["score"].dropna()) == {"msp", "max_logit"}
    assert "imagenet_x" not in set(table["dataset"])  # no annotations given


def test_zero_shot_model_without_logit_scale_is_named_in_the_error(val_images):
    idd, tests, ood = _model_inputs(val_images, skill=6.0, seed=0)
    ood = [DatasetLogits("sun", ood[0].logits, ood[0].labels)]
    with pytest.raises(MetricsInputError, match="'clip_b32'.*'sun'.*logit_scale"):
        model_metrics_table("clip_b32", idd, tests, ood, MetricSettings(), zero_shot=True)


def _write_manifest(path, dataset, names, labels, label_space):
    table = pd.DataFrame(
        {
            "index": np.arange(len(names), dtype=np.int32),
            "path": [f"x/{n}" for n in names],
            "label": np.asarray(labels, dtype=np.int16),
        }
    )
    metadata = {
        "dataset": dataset,
        "root": "data/extracted",
        "manifest_hash": manifest_hash(table),
        "n_images": len(names),
        "label_space": json.loads(label_space.to_json()),
    }
    write_manifest(
        ManifestBuild(table, metadata, pd.DataFrame(columns=["path", "reason"])), path, path.with_suffix(".skipped.csv")
    )
    return metadata["manifest_hash"]


ROW = {"model_id": "tiny_clip", "library": "open_clip", "architecture": "tiny", "pretrained": "demo"}


def _write_study_files(tmp_path, val_images, skill=6.0, seed=0, labels_override=None):
    """Manifests and logits caches of one model on ImageNet val, one test condition and one OOD set."""
    idd, tests, ood = _model_inputs(val_images, skill, seed)
    logits_paths, manifest_paths = {}, {}
    for data in (idd, tests[0], ood[0]):
        names = (
            data.file_names
            if data.file_names is not None
            else [f"{data.dataset}_{i}.jpg" for i in range(len(data.labels))]
        )
        manifest_paths[data.dataset] = tmp_path / "manifests" / f"{data.dataset}.parquet"
        manifest_paths[data.dataset].parent.mkdir(exist_ok=True)
        space = data.label_space or LabelSpace.imagenet_1k()
        mhash = _write_manifest(manifest_paths[data.dataset], data.dataset, names, data.labels, space)
        logits_paths[data.dataset] = tmp_path / "logits" / f"{data.dataset}.parquet"
        metadata = {**expected_metadata(ROW, data.dataset, mhash, "openai"), "logit_scale": 100.0}
        labels = data.labels if labels_override is None or data.dataset != "imagenet_r" else labels_override
        write_logits(logits_paths[data.dataset], np.arange(len(labels)), labels, data.logits, metadata)
    return logits_paths, manifest_paths, (idd, tests[:1], ood)


def test_table_from_cache_and_manifest_files_equals_table_from_arrays(tmp_path, val_images, annotations):
    logits_paths, manifest_paths, (idd, tests, ood) = _write_study_files(tmp_path, val_images)
    settings = MetricSettings()
    from_files = model_metrics_from_files(
        "tiny_clip",
        logits_paths,
        manifest_paths,
        "imagenet_val",
        ["imagenet_r"],
        ["sun"],
        settings,
        zero_shot=True,
        registry_row=ROW,
        prompt_set="openai",
        annotations=annotations,
    )
    from_arrays = model_metrics_table("tiny_clip", idd, tests, ood, settings, zero_shot=True, annotations=annotations)
    pd.testing.assert_frame_equal(from_files, from_arrays)


def test_cache_of_another_model_is_refused_as_stale(tmp_path, val_images):
    logits_paths, manifest_paths, _ = _write_study_files(tmp_path, val_images)
    with pytest.raises(StaleCacheError, match="model_id"):
        model_metrics_from_files(
            "other",
            logits_paths,
            manifest_paths,
            "imagenet_val",
            ["imagenet_r"],
            ["sun"],
            MetricSettings(),
            zero_shot=True,
            registry_row={**ROW, "model_id": "other"},
            prompt_set="openai",
        )


def test_cache_whose_labels_disagree_with_the_manifest_names_the_file(tmp_path, val_images):
    bad = SUBSET.class_indices[(np.arange(300) + 1) % 200]
    logits_paths, manifest_paths, _ = _write_study_files(tmp_path, val_images, labels_override=bad)
    with pytest.raises(MetricsInputError, match=r"imagenet_r\.parquet.*labels differ"):
        model_metrics_from_files(
            "tiny_clip",
            logits_paths,
            manifest_paths,
            "imagenet_val",
            ["imagenet_r"],
            ["sun"],
            MetricSettings(),
            zero_shot=True,
            registry_row=ROW,
            prompt_set="openai",
        )


def test_missing_dataset_file_is_named_before_anything_is_read(tmp_path):
    with pytest.raises(MetricsInputError, match="'imagenet_a'"):
        model_metrics_from_files(
            "m",
            {"imagenet_val": tmp_path / "x"},
            {"imagenet_val": tmp_path / "y"},
            "imagenet_val",
            ["imagenet_a"],
            [],
            MetricSettings(),
            zero_shot=False,
        )


@pytest.fixture(scope="module")
def three_models(val_images, annotations):
    """Per-model tables of two standard models and one CLIP model."""
    tables = {}
    for i, (model, skill) in enumerate((("std_a", 4.0), ("std_b", 7.0), ("clip", 5.5))):
        idd, tests, ood = _model_inputs(val_images, skill, seed=10 * i)
        tables[model] = model_metrics_table(model, idd, tests, ood, MetricSettings(), model == "clip", annotations)
    registry = pd.DataFrame(
        {
            "model_id": ["std_a", "std_b", "clip"],
            "group": ["standard", "standard", "clip_zeroshot"],
            "training_source": ["ImageNet-1k", "ImageNet-1k", "LAION-2B"],
        }
    )
    return tables, registry


def test_aggregate_adds_effective_robustness_that_is_zero_for_the_two_reference_models(three_models):
    tables, registry = three_models
    combined = aggregate_metrics(list(tables.values()), registry)
    robustness = combined[combined["metric"] == "effective_robustness"]
    assert set(robustness["model"]) == {"std_a", "std_b", "clip"}
    assert set(robustness["dataset"]) == {"imagenet_x"}
    # a line through two points passes through both: the reference models sit on the trend, up to the
    # clipping of accuracies of exactly 0 or 1 to [LOGIT_EPS, 1 - LOGIT_EPS] (small factors of this test)
    np.testing.assert_allclose(robustness.loc[robustness["model"] != "clip", "value"], 0.0, atol=LOGIT_EPS + 1e-12)
    assert len(combined) == sum(len(t) for t in tables.values()) + len(robustness)


def test_aggregate_with_one_standard_model_logs_and_emits_no_effective_robustness(three_models, caplog):
    tables, registry = three_models
    registry = registry.assign(group=["standard", "more_data", "clip_zeroshot"])
    with caplog.at_level(logging.WARNING):
        combined = aggregate_metrics(list(tables.values()), registry)
    assert "effective_robustness" not in set(combined["metric"])
    assert "at least 2 reference" in caplog.text


def test_aggregate_refuses_a_model_missing_from_the_registry(three_models):
    tables, registry = three_models
    with pytest.raises(MetricsInputError, match="clip"):
        aggregate_metrics(list(tables.values()), registry[registry["model_id"] != "clip"])


def test_aggregate_from_files_records_settings_and_refuses_tables_of_other_settings(tmp_path, three_models):
    tables, registry = three_models
    settings = MetricSettings()
    paths = [
        write_metrics_table(t, tmp_path / f"{m}.parquet", {"model": m, "settings": settings.to_dict()})
        for m, t in tables.items()
    ]
    roundtrip, metadata = read_metrics_table(paths[0])
    pd.testing.assert_frame_equal(roundtrip, tables["std_a"])
    assert metadata["settings"]["ece_bins"] == 15

    result = aggregate_from_files(paths, registry, settings, "imagenet_val")
    assert result.settings["settings"]["calibration_split_seed"] == 0
    assert result.settings["settings"]["ood_score"] == "msp"
    assert "numpy" in result.settings["library_versions"]
    assert set(result.correlations["model_group"]) == set(registry["group"])

    other = MetricSettings(ece_bins=10)
    with pytest.raises(MetricsInputError, match=r"std_a\.parquet.*ece_bins"):
        aggregate_from_files(paths, registry, other, "imagenet_val")


def test_settings_from_config_name_a_missing_key():
    with pytest.raises(MetricsInputError, match="ood_score"):
        MetricSettings.from_config({"ece_bins": 15, "calibration_split_seed": 0, "temperature_range": [0.01, 10]})


def test_imagenet_c_condition_is_the_mean_over_every_corruption_and_severity():
    rows = [
        (m, f"imagenet_c_{c}_{s}", "ece_ts", v)
        for m, base in (("a", 1.0), ("b", 5.0))
        for (c, s), v in zip([("fog", 1), ("fog", 3), ("snow", 1), ("snow", 3)], [base, base + 1, base + 2, base + 5])
    ]
    rows.append(("c", "imagenet_c_fog_1", "ece_ts", 9.0))  # lacks three of the four datasets: no mean
    frame = tidy_frame(
        [{"model": m, "dataset": d, "metric": k, "value": v, "factor": None, "score": None} for m, d, k, v in rows]
    )
    means = imagenet_c_mean_rows(frame).set_index("model")
    assert set(means["dataset"]) == {"imagenet_c"} and set(means["metric"]) == {"ece_ts"}
    assert means.loc["a", "value"] == pytest.approx(np.mean([1.0, 2.0, 3.0, 6.0]))
    assert means.loc["b", "value"] == pytest.approx(np.mean([5.0, 6.0, 7.0, 10.0]))
    assert "c" not in means.index
