"""A user's own model joins the study (issue 14, section 3) without changing the paper's results: it is measured
against the paper's groups, fits, correlations and findings, never mixed into them, and is drawn highlighted and
labelled in every figure. Real tables built in the tests (synthetic metrics of a 34-model study plus one own model
whose values are extreme), the real aggregate, findings, figure and report-card code."""

from __future__ import annotations

import json
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

from clip_robustness.demo.metrics import synthetic_metrics, synthetic_registry
from clip_robustness.figures import FIGURE_NAMES, figure_function
from clip_robustness.figures.data import check_metrics, paper_points, points, select
from clip_robustness.figures.report_card import group_comparison, logits_provenance, render_html, report_card
from clip_robustness.figures.style import Style, paper_context
from clip_robustness.metrics.aggregate import aggregate_metrics
from clip_robustness.metrics.correlation import accuracy_auroc_correlations
from clip_robustness.metrics.findings import FindingsSettings, findings_table
from clip_robustness.models.registry import CATALOGUE_STUDY, OWN_STUDY, PAPER_STUDY, paper_rows, study_of

matplotlib.use("Agg")

OWN = "timm__my_net.mine"
#: The own model's value of each metric: as far as possible from the paper's models, so that mixing it into any
#: group statistic or fit would move it.
EXTREME = {
    "top1": 0.995,
    "factor_accuracy": 0.02,
    "auroc": 0.03,
    "fpr95": 0.99,
    "ece": 60.0,
    "ece_ts": 55.0,
    "nll": 9.0,
    "nll_ts": 8.5,
    "temperature": 9.5,
    "error_ratio": 40.0,
    "effective_robustness": -0.9,
    "shape_bias": 0.99,
    "shape_fraction": 0.9,
    "texture_fraction": 0.01,
    "n_cue_conflict": 1000.0,
}


def extreme_copy(metrics: pd.DataFrame, like: str, model: str) -> pd.DataFrame:
    """The metric rows of ``like``, renamed to ``model``, every value replaced by its EXTREME one."""
    rows = metrics[metrics["model"] == like].copy()
    rows["model"] = model
    rows["value"] = rows["metric"].map(EXTREME).astype(float)
    return rows


@pytest.fixture(scope="module")
def study():
    """(paper registry, paper metrics, registry with the own model, metrics with the own model)."""
    registry = synthetic_registry({"clip_zeroshot": 12, "clip_ft": 4, "standard": 12, "more_data": 6}, seed=7)
    registry["study"] = PAPER_STUDY
    metrics = synthetic_metrics(
        registry,
        test_conditions=["imagenet_v2_threshold07", "imagenet_r", "imagenet_a"],
        corruptions=["fog"],
        severities=[1],
        ood_sets=["textures", "sun"],
        seed=7,
        cue_conflict=["cue_conflict"],
    )
    # The own model is a "standard" classifier trained on ImageNet-1k like the paper's standard models: the group
    # whose fit every effective robustness, and half of every finding, rests on.
    own_row = registry[registry["model_id"] == "standard_000"].assign(model_id=OWN, study=OWN_STUDY)
    with_own = pd.concat([registry, own_row], ignore_index=True)
    metrics_own = pd.concat([metrics, extreme_copy(metrics, "standard_000", OWN)], ignore_index=True)
    return registry, check_metrics(metrics), with_own, check_metrics(metrics_own)


# ---------------------------------------------------------------------------------------------- the registry


def test_study_of_defaults_to_paper_for_a_missing_column_or_empty_cell():
    table = pd.DataFrame({"model_id": ["a", "b", "c", "d"], "study": ["", None, OWN_STUDY, CATALOGUE_STUDY]})
    assert study_of(table).tolist() == [PAPER_STUDY, PAPER_STUDY, OWN_STUDY, CATALOGUE_STUDY]
    assert study_of(table.drop(columns="study")).tolist() == [PAPER_STUDY] * 4
    assert paper_rows(table)["model_id"].tolist() == ["a", "b"]


# ---------------------------------------------------------------------------------------------- metrics and findings


def test_effective_robustness_fit_is_the_paper_standard_models_and_the_own_model_is_measured_against_it(study):
    registry, metrics, with_own, metrics_own = study
    plain = ~metrics_own["metric"].eq("effective_robustness") & ~metrics_own["dataset"].eq("imagenet_c")
    per_model = [rows for _, rows in metrics_own[plain].groupby("model")]
    mixed = aggregate_metrics(per_model, with_own)
    paper_only = aggregate_metrics(
        [rows for model, rows in metrics_own[plain].groupby("model") if model != OWN], registry
    )
    er = mixed[mixed["metric"] == "effective_robustness"].set_index(["model", "factor"])["value"]
    er_paper = paper_only[paper_only["metric"] == "effective_robustness"].set_index(["model", "factor"])["value"]
    pd.testing.assert_series_equal(er.drop(OWN, level="model").sort_index(), er_paper.sort_index())
    # the own model gets its rows, far below the paper's trend (factor accuracy 0.02 at ImageNet-X accuracy 0.995)
    assert (er.loc[OWN] < -0.5).all() and len(er.loc[OWN]) == 10


def test_ood_correlations_ignore_the_own_model(study):
    registry, metrics, with_own, metrics_own = study
    pd.testing.assert_frame_equal(
        accuracy_auroc_correlations(metrics_own, with_own, "imagenet_val"),
        accuracy_auroc_correlations(metrics, registry, "imagenet_val"),
    )


def test_findings_are_the_same_with_and_without_the_own_model(study):
    registry, metrics, with_own, metrics_own = study
    settings = FindingsSettings(
        "imagenet_val",
        ("imagenet_v2_threshold07", "imagenet_r", "imagenet_a", "imagenet_c_fog_1"),
        ("textures", "sun"),
        "msp",
        bootstrap_samples=200,
        seed=0,
        min_models=4,
        cue_conflict=("cue_conflict",),
    )
    with_it = findings_table(metrics_own, with_own, settings)
    pd.testing.assert_frame_equal(with_it, findings_table(metrics, registry, settings))
    assert with_it["n_models"].str.contains("standard=12").any()  # 12 paper standard models, not 13


# ---------------------------------------------------------------------------------------------- figures


def test_points_tag_each_model_with_its_study_and_paper_points_drop_the_own_one(study):
    _, _, with_own, metrics_own = study
    pts = points(
        with_own,
        select(metrics_own, "top1", dataset="imagenet_val"),
        select(metrics_own, "ece", dataset="imagenet_val_id_test"),
    )
    assert pts.loc[pts["model"] == OWN, "study"].tolist() == [OWN_STUDY]
    assert OWN not in set(paper_points(pts)["model"]) and len(paper_points(pts)) == len(pts) - 1


def trend_lines(fig) -> list[tuple[str, np.ndarray]]:
    """Every drawn line but the y = x reference of the factor figure, as (panel title, xy data)."""
    out = []
    for ax in fig.axes:
        for line in ax.lines:
            xy = np.column_stack([np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)])
            if len(xy) == 2 and np.allclose(xy[:, 0], xy[:, 1]):
                continue
            out.append((ax.get_title(), xy))
    return out


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_every_figure_labels_the_own_model_and_keeps_the_paper_trends(study, name):
    registry, metrics, with_own, metrics_own = study
    with paper_context():
        fig = figure_function(name)(metrics_own, with_own, Style.from_registry(with_own))
        reference = figure_function(name)(metrics, registry, Style.from_registry(registry))
    labels = [t for ax in fig.axes for t in ax.texts if t.get_text() == OWN]
    assert labels, f"{name}: no panel labels {OWN}"
    assert all(t.get_zorder() > max(line.get_zorder() for line in t.axes.lines) for t in labels if t.axes.lines)
    # the own model's ring is on top, at the extreme values
    rings = [
        c for ax in fig.axes for c in ax.collections if c.get_zorder() == max(x.get_zorder() for x in ax.collections)
    ]
    assert any(
        np.isclose(c.get_offsets()[:, 0], EXTREME["top1"]).any()
        or np.isclose(c.get_offsets()[:, 1], EXTREME["ece"]).any()
        or np.isclose(c.get_offsets()[:, 1], EXTREME["auroc"]).any()
        for c in rings
    )
    got, want = trend_lines(fig), trend_lines(reference)
    assert [t for t, _ in got] == [t for t, _ in want]
    for (title, a), (_, b) in zip(got, want):
        np.testing.assert_allclose(a, b, err_msg=f"{name}: a trend line of panel {title!r} moved with the own model")
    assert legend_texts(fig) == legend_texts(reference)  # per-panel r values of the OOD trend sets
    figure_legend = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "Own model (labelled with its id)" in figure_legend


def test_catalogue_checkpoints_are_faint_unlabelled_background(study):
    registry, metrics, with_own, metrics_own = study
    catalogue = (
        registry[registry["group"] == "standard"].iloc[[1]].assign(model_id="timm__other.ckpt", study=CATALOGUE_STUDY)
    )
    table = pd.concat([with_own, catalogue], ignore_index=True)
    rows = check_metrics(pd.concat([metrics_own, extreme_copy(metrics_own, "standard_001", "timm__other.ckpt")]))
    with paper_context():
        fig = figure_function("calibration_shift")(rows, table, Style.from_registry(table))
        reference = figure_function("calibration_shift")(metrics_own, with_own, Style.from_registry(with_own))
    assert "timm__other.ckpt" not in [t.get_text() for ax in fig.axes for t in ax.texts]
    assert [xy.tolist() for _, xy in trend_lines(fig)] == [xy.tolist() for _, xy in trend_lines(reference)]
    assert "Other library checkpoints" in [t.get_text() for legend in fig.legends for t in legend.get_texts()]


# ---------------------------------------------------------------------------------------------- report card


def test_card_compares_the_own_model_with_paper_group_medians_that_exclude_it(study):
    registry, metrics, with_own, metrics_own = study
    table = group_comparison(metrics_own, with_own, OWN)
    top1 = table[(table["metric"] == "top1") & (table["dataset"] == "imagenet_val")].set_index("group")
    paper_top1 = (
        select(metrics, "top1", dataset="imagenet_val")
        .rename("value")
        .to_frame()
        .join(registry.set_index("model_id")["group"])
    )
    for group, values in paper_top1.groupby("group"):
        assert top1.loc[group, "n"] == len(values)
        assert top1.loc[group, "median"] == pytest.approx(values["value"].median())
        assert (top1.loc[group, "min"], top1.loc[group, "max"]) == (values["value"].min(), values["value"].max())
        assert top1.loc[group, "percentile"] == 100.0  # 0.995 is above every paper model
    assert (top1["value"] == EXTREME["top1"]).all()


def test_card_of_a_model_no_paper_model_shares_a_row_with_keeps_every_group_empty(study):
    """A study whose paper models have no metric rows yet (only the own model's branch has run): the card still
    lists each of the model's rows, with no group, no n and no percentile, instead of failing."""
    registry, metrics, with_own, metrics_own = study
    alone = check_metrics(metrics_own[metrics_own["model"] == OWN])
    table = group_comparison(alone, with_own, OWN)
    assert len(table) == len(alone)
    assert table["group"].isna().all() and table["percentile"].isna().all() and table["n"].isna().all()
    assert table["value"].tolist() == alone["value"].tolist()


def test_logits_provenance_separates_shared_fields_from_per_file_ones():
    common, per_file = logits_provenance(
        {
            "imagenet_val": {
                "library": "timm",
                "preprocessing": {"size": 160},
                "prompt_set": None,
                "manifest_hash": "a",
                "head_precision": "float32",
                "gpu_name": "cpu",
            },
            "textures": {
                "library": "timm",
                "preprocessing": {"size": 160},
                "prompt_set": None,
                "manifest_hash": "b",
                "head_precision": "float32",
                "gpu_name": "NVIDIA H200",
            },
        }
    )
    assert (
        common["library"] == "timm"
        and common["preprocessing"] == '{"size": 160}'
        and common["head_precision"] == "float32"
    )
    assert per_file["manifest_hash"].tolist() == ["a", "b"] and per_file["gpu_name"].tolist() == ["cpu", "NVIDIA H200"]
    assert "library" not in per_file.columns


def test_rendered_card_is_standalone_html_with_the_models_values_and_weights(study):
    registry, metrics, with_own, metrics_own = study
    qc = pd.DataFrame(
        {
            "model": [OWN],
            "dataset": ["imagenet_val"],
            "ours_pct": [99.5],
            "published_pct": [float("nan")],
            "diff_pp": [float("nan")],
            "flagged": [False],
            "source": ["missing: the library publishes no number"],
        }
    )
    weights = {
        "model_id": OWN,
        "library": "timm",
        "library_version": "1.0",
        "files": [{"file": "/w/mine.safetensors", "size": 10, "sha256": "ab" * 32, "source": "local file"}],
    }
    page = render_html(report_card(OWN, metrics_own, with_own, qc, {"imagenet_val": {"library": "timm"}}, weights))
    assert page.startswith("<!DOCTYPE html>") and "<link" not in page and "src=" not in page
    assert OWN in page and "ab" * 32 in page and "missing: the library publishes no number" in page
    assert "0.9950" in page and "CLIP (zero-shot): median [min, max] (n) · percentile" in page
    data = json.loads(
        re.search(r'<script type="application/json" id="report-card-data">(.*?)</script>', page, re.S).group(1)
    )
    top1 = [r["value"] for r in data["metrics"] if r["metric"] == "top1" and r["dataset"] == "imagenet_val"]
    assert top1 == [EXTREME["top1"]] and data["weights"]["files"][0]["sha256"] == "ab" * 32
