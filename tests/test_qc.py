"""Published-accuracy QC: real shipped reference rows, synthetic 'our' top-1 values."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clip_robustness.models.registry import load_model_registry
from clip_robustness.qc.published_accuracy import (
    QC_COLUMNS,
    QC_DATASET_IDS,
    MetricsTableError,
    ReferenceTableError,
    compare_with_published,
    load_reference_tables,
    our_top1,
    published_accuracy_qc,
    published_top1,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "reference"
QUICKGELU_LAION = "openclip__ViT-B-32-quickgelu__laion400m_e31"  # open_clip lists it under the -quickgelu name
QUICKGELU_OPENAI = "openclip__ViT-B-16-quickgelu__openai"  # open_clip lists it under the base name ViT-B-16
CONVNEXT = "timm__convnext_base.fb_in1k"  # timm publishes it at 224 and 288 px; the registry says 224
CLIP_FT = "timm__vit_base_patch16_clip_224.openai_ft_in1k"
MODELS = [QUICKGELU_LAION, QUICKGELU_OPENAI, CONVNEXT, CLIP_FT]

OPEN_CLIP_COLUMN = {
    "imagenet_val": "ImageNet 1k",
    "imagenet_v2_matched_frequency": "ImageNet v2",
    "imagenet_sketch": "ImageNet Sketch",
    "imagenet_r": "ImageNet-R",
    "imagenet_a": "ImageNet-A",
    "objectnet": "ObjectNet",
}
TIMM_FILE = {
    "imagenet_val": "imagenet",
    "imagenet_v2_matched_frequency": "imagenetv2-matched-frequency",
    "imagenet_sketch": "sketch",
    "imagenet_r": "imagenet-r",
    "imagenet_a": "imagenet-a",
}


@pytest.fixture(scope="module")
def registry_table():
    table = load_model_registry(ROOT / "config" / "models.tsv").table
    return table[table["model_id"].isin(MODELS)].reset_index(drop=True)


@pytest.fixture(scope="module")
def references():
    return load_reference_tables(REFERENCE)


def published_fraction(model_id: str, dataset: str) -> float | None:
    """The published top-1 as a fraction, read straight from the shipped CSVs (independently of qc.py)."""
    if model_id.startswith("openclip__"):
        _, arch, tag = model_id.split("__")
        names = {arch, arch.removesuffix("-quickgelu")}
        with open(REFERENCE / "openclip_results.csv", newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r["pretrained"] == tag and r["name"] in names]
        rows.sort(key=lambda r: r["name"] != arch)  # the exact config name first
        return float(rows[0][OPEN_CLIP_COLUMN[dataset]])
    if dataset not in TIMM_FILE:
        return None
    name = model_id.removeprefix("timm__")
    with open(REFERENCE / f"timm-results-{TIMM_FILE[dataset]}.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["model"] == name and r["img_size"] == "224"]
    return float(rows[0]["top1"]) / 100.0


def metrics_table(values: dict[tuple[str, str], float]) -> pd.DataFrame:
    """A tidy metrics table (the aggregate_metrics contract) with one top1 row per (model, dataset)."""
    rows = [
        {"model": m, "dataset": d, "metric": "top1", "value": v, "factor": None, "score": None}
        for (m, d), v in values.items()
    ]
    rows.append(
        {"model": CONVNEXT, "dataset": "imagenet_val", "metric": "ece", "value": 3.2, "factor": None, "score": None}
    )
    rows.append(
        {
            "model": CONVNEXT,
            "dataset": "imagenet_val",
            "metric": "factor_accuracy",
            "value": 0.1,
            "factor": "pose",
            "score": None,
        }
    )
    return pd.DataFrame(rows)


def test_synthetic_mismatch_flags_exactly_the_mismatching_rows(registry_table, references):
    ours = {}
    for model in MODELS:
        for dataset in QC_DATASET_IDS:
            published = published_fraction(model, dataset)
            ours[(model, dataset)] = 0.5 if published is None else published
    mismatches = {
        (QUICKGELU_LAION, "imagenet_val"): +0.006,
        (CONVNEXT, "imagenet_r"): -0.0101,
        (CLIP_FT, "imagenet_a"): +0.02,
    }
    for key, delta in mismatches.items():
        ours[key] += delta
    ours[(QUICKGELU_OPENAI, "imagenet_sketch")] += 0.004  # 0.4 pp: within the 0.5 pp tolerance

    table = published_accuracy_qc(metrics_table(ours), registry_table, references, tolerance_pp=0.5)

    assert tuple(table.columns) == QC_COLUMNS
    assert len(table) == len(MODELS) * len(QC_DATASET_IDS)
    flagged = table[table["flagged"]]
    assert set(zip(flagged["model"], flagged["dataset"])) == set(mismatches)
    for row in flagged.itertuples():
        assert row.diff_pp == pytest.approx(100 * mismatches[(row.model, row.dataset)], abs=1e-6)
    within = table[(table["model"] == QUICKGELU_OPENAI) & (table["dataset"] == "imagenet_sketch")].iloc[0]
    assert within["diff_pp"] == pytest.approx(0.4, abs=1e-6) and not within["flagged"]


def test_timm_objectnet_has_no_published_number_and_is_reported_missing_not_flagged(registry_table, references):
    ours = pd.DataFrame({"model": [CONVNEXT], "dataset": ["objectnet"], "ours_pct": [12.0]})
    table = compare_with_published(ours, published_top1(registry_table, references), tolerance_pp=0.5)
    row = table.iloc[0]
    assert np.isnan(row["published_pct"]) and np.isnan(row["diff_pp"]) and not row["flagged"]
    assert row["source"] == "missing: timm publishes no objectnet results"


def test_quickgelu_config_uses_its_own_row_else_the_base_name_row(registry_table, references):
    published = published_top1(registry_table, references).set_index(["model", "dataset"])
    # openclip_results.csv: ViT-B-32-quickgelu/laion400m_e31 ImageNet 1k = 0.6294 (ViT-B-32 without it: 0.6022)
    exact = published.loc[(QUICKGELU_LAION, "imagenet_val")]
    assert exact["published_pct"] == pytest.approx(62.94) and "(ViT-B-32-quickgelu, laion400m_e31)" in exact["source"]
    # only ViT-B-16/openai is listed (open_clip loads OpenAI weights with QuickGELU): 0.6834
    fallback = published.loc[(QUICKGELU_OPENAI, "imagenet_val")]
    assert fallback["published_pct"] == pytest.approx(68.34) and "(ViT-B-16, openai)" in fallback["source"]


def test_timm_reference_is_taken_at_the_registry_resolution(registry_table, references):
    published = published_top1(registry_table, references).set_index(["model", "dataset"])
    # results-imagenet.csv lists convnext_base.fb_in1k at 288 px (84.466) and 224 px (83.838)
    assert published.loc[(CONVNEXT, "imagenet_val"), "published_pct"] == pytest.approx(83.838)
    at_256 = registry_table.assign(
        resolution=np.where(registry_table["model_id"] == CONVNEXT, 256, registry_table["resolution"])
    )
    missing = published_top1(at_256, references).set_index(["model", "dataset"]).loc[(CONVNEXT, "imagenet_val")]
    assert np.isnan(missing["published_pct"])
    assert missing["source"].startswith("missing:") and "only at img_size 224, 288, not 256" in missing["source"]


def test_tolerance_is_exclusive_in_percentage_points():
    ours = pd.DataFrame(
        {
            "model": ["m", "m", "m"],
            "dataset": ["imagenet_val", "imagenet_r", "imagenet_a"],
            "ours_pct": [80.0, 80.0, 80.0],
        }
    )
    published = pd.DataFrame(
        {
            "model": ["m", "m", "m"],
            "dataset": ["imagenet_val", "imagenet_r", "imagenet_a"],
            "published_pct": [79.5, 79.49, 80.5],
            "source": ["s", "s", "s"],
        }
    )
    table = compare_with_published(ours, published, tolerance_pp=0.5).set_index("dataset")
    # 80.0 - 79.5 = 0.5 (not above 0.5); 80.0 - 79.49 = 0.51; 80.0 - 80.5 = -0.5
    assert table["diff_pp"].to_dict() == pytest.approx({"imagenet_val": 0.5, "imagenet_r": 0.51, "imagenet_a": -0.5})
    assert table["flagged"].to_dict() == {"imagenet_val": False, "imagenet_r": True, "imagenet_a": False}


def test_model_missing_from_the_registry_is_reported_not_flagged():
    ours = pd.DataFrame({"model": ["timm__unlisted.x"], "dataset": ["imagenet_val"], "ours_pct": [50.0]})
    published = pd.DataFrame(columns=["model", "dataset", "published_pct", "source"])
    row = compare_with_published(ours, published, tolerance_pp=0.5).iloc[0]
    assert row["source"] == "missing: model not in the registry" and not row["flagged"]


def test_our_top1_keeps_only_plain_top1_rows_in_percent():
    table = our_top1(metrics_table({(CONVNEXT, "imagenet_val"): 0.25, (CONVNEXT, "imagenet_c_fog_3"): 0.1}))
    assert table.to_dict("records") == [{"model": CONVNEXT, "dataset": "imagenet_val", "ours_pct": 25.0}]


def test_duplicate_top1_rows_raise_naming_the_model_and_dataset():
    metrics = metrics_table({(CONVNEXT, "imagenet_r"): 0.3})
    metrics = pd.concat([metrics, metrics.iloc[[0]]], ignore_index=True)
    with pytest.raises(
        MetricsTableError, match=r"duplicate top1 rows, e.g. model 'timm__convnext_base.fb_in1k' on 'imagenet_r'"
    ):
        our_top1(metrics)


def test_missing_reference_file_or_column_names_it(tmp_path):
    with pytest.raises(ReferenceTableError, match=r"openclip_results\.csv does not exist"):
        load_reference_tables(tmp_path)
    for path in (REFERENCE).glob("*.csv"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    sketch = pd.read_csv(tmp_path / "timm-results-sketch.csv").drop(columns=["img_size"])
    sketch.to_csv(tmp_path / "timm-results-sketch.csv", index=False)
    with pytest.raises(ReferenceTableError, match=r"timm-results-sketch\.csv: missing column\(s\) 'img_size'"):
        load_reference_tables(tmp_path)


def test_qc_rule_writes_the_table_and_logs_each_flagged_model(tmp_path):
    """Runs the real rule (workflow/rules/qc.smk and its script) through Snakemake on a two-model study."""
    registry = load_model_registry(ROOT / "config" / "models.tsv").table
    subset = registry[registry["model_id"].isin([CONVNEXT, QUICKGELU_OPENAI])]
    subset.to_csv(tmp_path / "models.tsv", sep="\t", index=False)
    values = {
        (CONVNEXT, "imagenet_val"): published_fraction(CONVNEXT, "imagenet_val") + 0.01,
        (QUICKGELU_OPENAI, "imagenet_val"): published_fraction(QUICKGELU_OPENAI, "imagenet_val"),
    }
    (tmp_path / "results" / "metrics").mkdir(parents=True)
    metrics_table(values).to_parquet(tmp_path / "results" / "metrics" / "metrics.parquet")
    (tmp_path / "Snakefile").write_text(
        'config["model_registry"] = "models.tsv"\n'
        'config["qc"] = {"tolerance_pp": 0.5}\n'
        f"QC_REFERENCE_DIR = {str(REFERENCE)!r}\n"
        'METRICS_TABLE = "results/metrics/metrics.parquet"\n'
        'QC_TABLE = "results/qc/published_accuracy.csv"\n'
        "from clip_robustness.workflow.joblog import log_path\n"
        "def get_published_reference_tables(wildcards):\n"
        "    from clip_robustness.qc.published_accuracy import reference_table_files\n"
        "    return [str(p) for p in reference_table_files(QC_REFERENCE_DIR)]\n"
        f"include: {str(ROOT / 'workflow' / 'rules' / 'qc.smk')!r}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "results/qc/published_accuracy.csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results" / "qc" / "published_accuracy.csv")
    assert table[table["flagged"]][["model", "dataset"]].values.tolist() == [[CONVNEXT, "imagenet_val"]]
    log = (tmp_path / "results" / "logs" / "qc_published_accuracy.log").read_text()
    assert "1 deviate by more than 0.5 pp" in log and f"FLAGGED {CONVNEXT} on imagenet_val" in log


def test_model_of_a_library_that_publishes_nothing_is_reported_missing_not_flagged(references):
    row = {
        "model_id": "python__pkg.models.net__mine",
        "library": "python",
        "architecture": "pkg.models:net",
        "pretrained": "mine",
        "resolution": 32,
    }
    published = published_top1(pd.DataFrame([row]), references)
    assert len(published) == len(QC_DATASET_IDS) and published["published_pct"].isna().all()
    assert published["source"].str.contains("the python library publishes no results").all()


def test_reference_tables_tool_cuts_the_shipped_tables_to_themselves(tmp_path):
    """tools/build_reference_tables.py keeps the registry's rows and the QC's columns: run on the shipped cut (a
    source that holds only kept rows and columns) it writes every shipped file back byte for byte."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/build_reference_tables.py"),
            "--source",
            str(ROOT / "config/reference"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    shipped = sorted(p.name for p in (ROOT / "config/reference").glob("*.csv"))
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == shipped
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (ROOT / "config/reference" / name).read_bytes(), name
