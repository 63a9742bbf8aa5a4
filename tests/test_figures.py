"""Figures and tables: drawn from synthetic tidy metric tables (the real plotting code, no mocks)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from scipy import stats

from clip_robustness.demo.metrics import synthetic_metrics, synthetic_registry
from clip_robustness.figures import (
    FIGURE_NAMES,
    TABLE_FILES,
    figure_function,
    figure_options,
    figure_spec,
    render_figure,
)
from clip_robustness.figures.calibration import condition_values, plot_calibration, shift_conditions
from clip_robustness.figures.data import (
    FigureInputError,
    check_metrics,
    imagenet_x_accuracy,
    points,
    read_metrics,
    select,
)
from clip_robustness.figures.factor import plot_factor_robustness
from clip_robustness.figures.ood import plot_ood_detection, score_values
from clip_robustness.figures.panels import expit, logit, logit_trend
from clip_robustness.figures.style import GROUP_PALETTE, SOURCE_MARKERS, Style, assign_source_markers, paper_context
from clip_robustness.figures.tables import model_summary, registry_latex, registry_table, summary_column
from clip_robustness.models.registry import load_model_registry

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[1]


def tidy(rows):
    """A tidy metrics table from (model, dataset, metric, value[, factor[, score]]) tuples."""
    full = [tuple(r) + (None,) * (6 - len(r)) for r in rows]
    return check_metrics(pd.DataFrame(full, columns=["model", "dataset", "metric", "value", "factor", "score"]))


@pytest.fixture(scope="module")
def demo_study():
    """The demo's shape: one zero-shot CLIP and two timm classifiers, few datasets."""
    registry = synthetic_registry({"clip_zeroshot": 1, "standard": 1, "more_data": 1}, seed=1)
    metrics = synthetic_metrics(
        registry,
        test_conditions=["imagenet_v2_threshold07", "imagenet_r"],
        corruptions=[],
        severities=[],
        ood_sets=["textures"],
        seed=1,
    )
    return registry, metrics


@pytest.fixture(scope="module")
def mid_study():
    """Forty models: every group has several models, so trend lines and correlations exist."""
    registry = synthetic_registry({"clip_zeroshot": 16, "clip_ft": 6, "standard": 12, "more_data": 6}, seed=2)
    metrics = synthetic_metrics(
        registry,
        test_conditions=["imagenet_v2_threshold07", "imagenet_r", "imagenet_a"],
        corruptions=["fog", "snow"],
        severities=[1, 3],
        ood_sets=["textures", "sun"],
        seed=2,
    )
    return registry, metrics


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


# ---------------------------------------------------------------------------------------------- names and wiring


def test_every_figure_name_has_a_function_a_rule_and_a_caption():
    rules = (REPO / "workflow/rules/figures.smk").read_text()
    # one rule definition, looped over the figure table, named plot_<figure>, with the figure's caption and script
    assert "for figure in FIGURES:" in rules and 'f"plot_{figure.name}"' in rules
    assert (
        "caption=figure.caption" in rules and "figure=figure.name," in rules and '"../scripts/plot_figure.py"' in rules
    )
    for name in FIGURE_NAMES:
        assert callable(figure_function(name))
        assert figure_spec(name).caption == f"../report/{name}.rst"
        assert (REPO / f"workflow/report/{name}.rst").read_text().strip()
    # every table has a rule: the findings table's sits with the metrics stage (metrics.smk), the others here
    tables_rules = rules + (REPO / "workflow/rules/metrics.smk").read_text()
    for table in TABLE_FILES:
        assert f'table_path("{table}")' in tables_rules


def test_figure_rules_read_only_the_metric_tables_and_the_registry():
    rules = (REPO / "workflow/rules/figures.smk").read_text()
    inputs = [block for _, block in re.findall(r"^( *)input:\n((?:\1    .+\n)+)", rules, re.M)]
    allowed = {
        "metrics=METRICS_TABLE,",
        'registry=config["model_registry"],',
        "ood_correlations=OOD_CORRELATIONS,",
        "get_figures(),",
        "get_tables(),",
    }
    assert {line.strip() for block in inputs for line in block.splitlines()} <= allowed


def test_unknown_figure_name_is_refused_naming_the_known_ones(demo_study, tmp_path):
    registry, metrics = demo_study
    with pytest.raises(KeyError, match="calibration_shift"):
        render_figure("calibraton", metrics, registry, tmp_path / "x.png", tmp_path / "x.pdf")


# ---------------------------------------------------------------------------------------------- rendering


def test_every_figure_renders_png_and_pdf_for_the_demo_sized_study(demo_study, tmp_path):
    registry, metrics = demo_study
    for name in FIGURE_NAMES:
        render_figure(name, metrics, registry, tmp_path / f"{name}.png", tmp_path / f"{name}.pdf")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


def draw_all(metrics, registry, style):
    """Draw every figure to an in-memory low-resolution PNG (layout and drawing run in full)."""
    with paper_context():
        for name in FIGURE_NAMES:
            buffer = io.BytesIO()
            figure_function(name)(metrics, registry, style).savefig(buffer, format="png", dpi=40)
            assert buffer.getvalue()[:4] == b"\x89PNG"


def test_every_figure_draws_with_logit_scaled_accuracy_axes(mid_study):
    registry, metrics = mid_study
    draw_all(metrics, registry, Style.from_registry(registry, logit_scaled=True))


def test_logit_option_sets_logit_scale_on_accuracy_axes_only(mid_study):
    registry, metrics = mid_study
    with paper_context():
        fig = plot_ood_detection(metrics, registry, Style.from_registry(registry, logit_scaled=True))
    ax = fig.axes[0]
    assert ax.get_xscale() == "logit"  # ImageNet accuracy
    assert ax.get_yscale() == "linear"  # AUROC is not an accuracy


def test_missing_dataset_gives_an_empty_panel_with_a_note_not_a_crash(demo_study):
    registry, metrics = demo_study  # no imagenet_a rows
    with paper_context():
        fig = plot_calibration(metrics, registry, Style.from_registry(registry))
    notes = [t for t in texts(fig) if "imagenet_a" in t]
    assert len(notes) == 4  # ECE, ECE after TS, NLL, NLL after TS


def test_empty_metrics_table_still_draws_every_figure(demo_study):
    registry, metrics = demo_study
    draw_all(metrics.iloc[:0], registry, Style.from_registry(registry))


# ---------------------------------------------------------------------------------------------- style


def test_group_colour_and_source_marker_are_the_same_in_every_figure(mid_study):
    registry, metrics = mid_study
    style = Style.from_registry(registry)
    clip_colour = GROUP_PALETTE["clip_zeroshot"]
    with paper_context():
        figures = [
            plot_factor_robustness(metrics, registry, style),
            plot_ood_detection(metrics, registry, style),
            plot_calibration(metrics, registry, style),
        ]
    for fig in figures:
        legend = fig.legends[0]
        entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
        assert to_hex(entries["CLIP (zero-shot)"].get_color()) == clip_colour
        assert entries["CLIP: LAION-2B"].get_marker() == SOURCE_MARKERS["laion2b"]
        assert to_hex(entries["Standard (IN-1k)"].get_color()) == GROUP_PALETTE["standard"]


def test_clip_ft_is_split_by_fine_tuning_route_with_one_colour_each(mid_study):
    registry, metrics = mid_study  # CLIP-FT routes in1k and in12k->in1k
    style = Style.from_registry(registry)
    with paper_context():
        fig = figure_function("factor_robustness_by_finetuning")(metrics, registry, style)
    legend = fig.legends[0]
    entries = {t.get_text(): to_hex(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert {"CLIP-FT (in1k)", "CLIP-FT (in12k->in1k)"} <= set(entries)
    assert entries["CLIP-FT (in1k)"] != entries["CLIP-FT (in12k->in1k)"]
    assert entries["CLIP-FT (in12k->in1k)"] == style.point_color("clip_ft", "in12k->in1k")


def test_mcm_figure_scores_zero_shot_clip_by_mcm_and_the_other_models_by_msp(mid_study):
    registry, metrics = mid_study
    values = score_values(metrics, "auroc", "textures", "mcm")
    mcm = select(metrics, "auroc", dataset="textures", score="mcm")
    msp = select(metrics, "auroc", dataset="textures", score="msp")
    clip = registry.loc[registry["group"] == "clip_zeroshot", "model_id"]
    standard = registry.loc[registry["group"] == "standard", "model_id"]
    assert values[clip].tolist() == mcm[clip].tolist()
    assert values[standard].tolist() == msp[standard].tolist()
    assert figure_options("ood_detection_mcm", "imagenet_val", [], ["textures"])["score"] == "mcm"
    assert figure_options("ood_detection", "imagenet_val", [], ["textures"])["score"] == "msp"


def test_calibration_figure_options_name_the_id_test_half_of_the_study():
    assert figure_options("calibration", "imagenet_val", ["imagenet_r"], []) == {"id_test": "imagenet_val_id_test"}


def test_source_markers_depend_on_the_whole_registry_not_on_the_plotted_subset():
    markers = assign_source_markers(["LAION-2B", "Acme-5B", "Zeta-1M", "WIT-400M"])
    assert markers["LAION-2B"] == SOURCE_MARKERS["laion2b"]
    assert markers["WIT-400M"] == SOURCE_MARKERS["wit400m"]
    # unknown sources get distinct spare markers in sorted order, whatever order they come in
    assert assign_source_markers(["Zeta-1M", "Acme-5B"]) == {k: markers[k] for k in ("Acme-5B", "Zeta-1M")}
    assert markers["Acme-5B"] != markers["Zeta-1M"]


def test_style_of_the_shipped_registry_gives_every_clip_source_a_distinct_marker():
    registry = load_model_registry(REPO / "config/models.tsv").table
    style = Style.from_registry(registry)
    assert set(style.source_markers) == set(registry.loc[registry["group"] == "clip_zeroshot", "training_source"])
    assert len(set(style.source_markers.values())) == len(style.source_markers)


# ---------------------------------------------------------------------------------------------- trends and r


def test_logit_trend_recovers_a_line_in_logit_space():
    x = np.array([0.3, 0.5, 0.7, 0.9])
    y = expit(0.5 * logit(x) + 0.2)  # exactly on logit(y) = 0.5 logit(x) + 0.2
    slope, intercept = logit_trend(x, y)
    assert slope == pytest.approx(0.5) and intercept == pytest.approx(0.2)


def test_group_with_fewer_than_two_points_gets_no_trend_line():
    assert logit_trend(np.array([0.5]), np.array([0.4])) is None


def test_ood_legend_gives_pearson_r_of_the_plotted_points(mid_study):
    registry, metrics = mid_study
    with paper_context():
        fig = plot_ood_detection(metrics, registry, Style.from_registry(registry), ood_sets=["textures"], score="msp")
    legend_text = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    pts = points(
        registry,
        select(metrics, "top1", dataset="imagenet_val"),
        select(metrics, "auroc", dataset="textures", score="msp"),
    )
    standard = pts[pts["group"] == "standard"]
    expected = np.corrcoef(standard["x"], standard["y"])[0, 1]  # independent of the scipy call in the figure
    assert f"Standard (IN-1k): r={expected:.2f}" in legend_text


def test_ood_legend_has_no_line_for_a_source_with_one_model(demo_study):
    registry, metrics = demo_study  # one CLIP model, one standard, one more-data
    with paper_context():
        fig = plot_ood_detection(metrics, registry, Style.from_registry(registry))
    assert fig.axes[0].get_legend() is None
    assert not fig.axes[0].get_lines()


# ---------------------------------------------------------------------------------------------- data selection


def test_imagenet_x_accuracy_comes_from_the_top1_row_or_from_the_error_ratio():
    metrics = tidy(
        [
            ("a", "imagenet_x", "top1", 0.7),
            ("a", "imagenet_x", "factor_accuracy", 0.5, "pose"),
            ("a", "imagenet_x", "error_ratio", 0.5 / 0.3, "pose"),
            # b has no top1 row: acc_f = 0.6, error ratio 2 -> acc_all = 1 - (1 - 0.6) / 2 = 0.8
            ("b", "imagenet_x", "factor_accuracy", 0.6, "pose"),
            ("b", "imagenet_x", "error_ratio", 2.0, "pose"),
        ]
    )
    acc = imagenet_x_accuracy(metrics)
    assert acc["a"] == pytest.approx(0.7)
    assert acc["b"] == pytest.approx(0.8)


def test_imagenet_c_severity_condition_is_the_mean_over_corruptions():
    metrics = tidy(
        [
            ("a", "imagenet_c_fog_1", "ece_ts", 2.0),
            ("a", "imagenet_c_snow_1", "ece_ts", 4.0),
            ("a", "imagenet_c_fog_3", "ece_ts", 9.0),
        ]
    )
    assert condition_values(metrics, "ece_ts", "imagenet_c_severity_1")["a"] == pytest.approx(3.0)  # (2 + 4) / 2
    assert shift_conditions(metrics, ["imagenet_r", "imagenet_c_fog_1", "imagenet_c_fog_3"]) == [
        "imagenet_val_id_test",
        "imagenet_r",
        "imagenet_c",
        "imagenet_c_severity_1",
        "imagenet_c_severity_3",
    ]


def test_metrics_table_without_a_column_is_refused_naming_file_and_column(tmp_path):
    path = tmp_path / "metrics.parquet"
    pd.DataFrame({"model": ["a"], "dataset": ["d"], "metric": ["top1"], "value": [0.5], "factor": [None]}).to_parquet(
        path
    )
    with pytest.raises(FigureInputError, match=r"metrics\.parquet.*'score'"):
        read_metrics(path)


def test_missing_metrics_table_error_says_which_rule_makes_it(tmp_path):
    with pytest.raises(FigureInputError, match="results/metrics/metrics.parquet"):
        read_metrics(tmp_path / "nothing.parquet")


def test_model_missing_from_the_registry_is_named(demo_study, tmp_path):
    registry, metrics = demo_study
    stale = pd.concat([metrics, tidy([("ghost_model", "imagenet_val", "top1", 0.5)])])
    with pytest.raises(FigureInputError, match="ghost_model"):
        render_figure("ood_detection", stale, registry, tmp_path / "o.png", tmp_path / "o.pdf")


def test_duplicated_metric_rows_are_refused_naming_the_model():
    metrics = tidy([("a", "imagenet_val", "top1", 0.5), ("a", "imagenet_val", "top1", 0.6)])
    with pytest.raises(FigureInputError, match="'a'"):
        select(metrics, "top1", dataset="imagenet_val")


# ---------------------------------------------------------------------------------------------- tables


def test_registry_table_lists_groups_in_legend_order_with_appendix_headers():
    registry = synthetic_registry({"standard": 2, "clip_ft": 1, "clip_zeroshot": 2})
    table = registry_table(registry)
    assert list(table.columns[:3]) == ["Model", "Group", "Library"]
    assert table["Group"].tolist() == ["CLIP (zero-shot)"] * 2 + ["CLIP-FT"] + ["Standard (IN-1k)"] * 2
    assert sorted(table["Model"]) == sorted(registry["model_id"])


def test_registry_latex_is_a_longtable_with_escaped_underscores():
    latex = registry_latex(registry_table(synthetic_registry({"clip_zeroshot": 1})))
    assert latex.startswith("\\begin{longtable}") and latex.rstrip().endswith("\\end{longtable}")
    assert "clip\\_zeroshot\\_000" in latex and "open\\_clip" in latex
    assert "\\toprule" in latex


def test_model_summary_has_one_row_per_model_and_every_tidy_value(mid_study):
    registry, metrics = mid_study
    summary = model_summary(metrics, registry).set_index("model")
    assert len(summary) == registry["model_id"].nunique()
    for row in metrics.sample(50, random_state=0).itertuples(index=False):
        column = summary_column(row.metric, row.dataset, row.factor, row.score)
        assert summary.loc[row.model, column] == row.value
    assert "auroc/textures/msp" in summary.columns and "factor_accuracy/imagenet_x/pose" in summary.columns


def test_model_summary_refuses_duplicate_rows_naming_model_and_column():
    registry = synthetic_registry({"standard": 1})
    metrics = tidy([("standard_000", "imagenet_val", "top1", 0.5), ("standard_000", "imagenet_val", "top1", 0.6)])
    with pytest.raises(FigureInputError, match="standard_000.*top1/imagenet_val"):
        model_summary(metrics, registry)


def test_synthetic_registry_is_a_valid_model_registry(tmp_path):
    registry = synthetic_registry()
    path = tmp_path / "models.tsv"
    registry.to_csv(path, sep="\t", index=False)
    loaded = load_model_registry(path)
    assert len(loaded.ids) == 210
    assert loaded.table["group"].value_counts().to_dict() == {
        "standard": 87,
        "clip_zeroshot": 51,
        "more_data": 40,
        "clip_ft": 32,
    }


def test_pearson_of_synthetic_auroc_and_accuracy_is_positive():
    """The synthetic generator keeps the study's qualitative finding (sanity of the benchmark input)."""
    registry = synthetic_registry({"standard": 30}, seed=3)
    metrics = synthetic_metrics(registry, test_conditions=[], corruptions=[], severities=[], ood_sets=["sun"], seed=3)
    pts = points(
        registry, select(metrics, "top1", dataset="imagenet_val"), select(metrics, "auroc", dataset="sun", score="msp")
    )
    assert stats.pearsonr(pts["x"], pts["y"]).statistic > 0.5


# ---------------------------------------------------------------------------------------------- dataset titles


def test_panel_titles_are_the_dataset_registrys_short_titles_and_follow_a_rename(mid_study, tmp_path):
    """Figures spell no dataset name: a short title renamed in the registry is what the panels show, an entry without
    one shows its title, and the ImageNet-C conditions carry the template's family title."""
    import yaml

    from clip_robustness.datasets.registry import load_dataset_registry
    from clip_robustness.figures.calibration import plot_calibration_shift

    raw = yaml.safe_load((REPO / "config" / "datasets.yaml").read_text())
    raw["datasets"]["textures"]["short_title"] = "Describable textures"
    raw["datasets"]["imagenet_r"]["short_title"] = "Renditions"
    raw["datasets"]["imagenet_c"]["short_title"] = "Corruptions"
    raw["datasets"]["imagenet_val"]["short_title"] = "IN-1k val"
    del raw["datasets"]["sun"]["short_title"]
    (tmp_path / "datasets.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    registry_file = load_dataset_registry(tmp_path / "datasets.yaml")
    registry, metrics = mid_study
    datasets = [
        "imagenet_val",
        "imagenet_v2_threshold07",
        "imagenet_r",
        "imagenet_a",
        "textures",
        "sun",
        "imagenet_c_fog_1",
        "imagenet_c_snow_3",
    ]
    titles = registry_file.figure_titles(datasets)
    style = Style.from_registry(registry, dataset_titles=titles)

    ood = plot_ood_detection(metrics, registry, style, ood_sets=["textures", "sun"])
    panel_titles = {ax.get_title() for ax in ood.axes}
    assert {"Describable textures", raw["datasets"]["sun"]["title"]} <= panel_titles
    assert "Textures" not in panel_titles and "SUN" not in panel_titles
    assert ood.axes[-1].get_xlabel() == "IN-1k val accuracy" and "vs IN-1k val accuracy" in ood.get_suptitle()

    shift = plot_calibration_shift(metrics, registry, style, test_conditions=datasets[1:4] + datasets[6:])
    shift_titles = {ax.get_title() for ax in shift.axes}
    assert {"Renditions", "Corruptions (mean, all)", "Corruptions s1 (mean)", "Corruptions s3 (mean)"} <= shift_titles
    assert "IN-1k val (ID test half)" in shift_titles
    assert "on IN-1k val (x: accuracy)" in shift.get_suptitle()
