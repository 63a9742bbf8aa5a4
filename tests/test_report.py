"""The HTML report: the real figure/table rules (workflow/rules/figures.smk, the findings rule of metrics.smk, and
the imports and the metrics and figures sections of common.smk) run by Snakemake on synthetic metric tables in a temporary project, then `--report`,
then the report opened in headless Chromium (Debian package `chromium`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from clip_robustness.demo.metrics import synthetic_metrics, synthetic_registry
from clip_robustness.figures import CATEGORY_FINDINGS, FIGURE_NAMES, TABLE_FILES
from clip_robustness.names import FINDINGS_VALIDATION

REPO = Path(__file__).resolve().parents[1]
SECTION = (
    "# ============================================================================ metrics (owner: metrics stage)"
)
NEXT_SECTION = "# ============================================================================ qc (owner: qc stage)"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CONFIG = """\
model_registry: config/models.tsv
models: all
datasets:
  in_distribution: imagenet_val
  test_conditions: [imagenet_v2_threshold07, imagenet_r]
  imagenet_c: {corruptions: [fog], severities: [1]}
  ood: [textures, inaturalist]
metrics: {ece_bins: 15, calibration_split_seed: 0, temperature_range: [0.01, 10.0], ood_score: msp,
          objectnet_pooling: max_logit}
figures: {logit_scaled_accuracy: false}
findings: {bootstrap_samples: 200, seed: 0, min_models: 4}
zero_shot: {prompt_set: openai}
"""

# Stands in for the Snakefile + common.smk's other sections (which need downloaded dataset registries): common.smk's
# imports, a STUDY with what the metrics and figures sections read (no models: the metric tables are given), those
# sections verbatim, then metrics.smk (the findings table) and figures.smk.
SNAKEFILE = """\
from types import SimpleNamespace
{imports}
configfile: "config.yaml"
report: "{repo}/workflow/report/workflow.rst"

ROLES = dict(
    in_distribution="imagenet_val",
    test_conditions=("imagenet_v2_threshold07", "imagenet_r", "imagenet_c_fog_1"),
    ood=("textures", "inaturalist"),
)
STUDY = SimpleNamespace(
    study=SimpleNamespace(**{{**ROLES, "ood_datasets": ROLES["ood"]}}), metric_roles=lambda: dict(ROLES),
    ablation_models=[], ablation_prompt_sets=[],
    dataset_titles=lambda: {{"imagenet_val": "ImageNet", "imagenet_r": "ImageNet-R"}},
)
MODELS, DATASETS = [], []
get_all_manifests = get_model_row = lambda wildcards: []
{section}
include: "{repo}/workflow/rules/metrics.smk"
include: "{repo}/workflow/rules/figures.smk"
"""

# Appended to a copy of the report: shows every image result through the report's own app
# (as a click on it would) and records whether the <img> it renders has decoded.
IMAGE_CHECK = """
<script>
setTimeout(async function () {
  const out = [];
  try {
    for (const [path, entry] of Object.entries(results)) {
      if (!entry.mime_type.startsWith("image/")) continue;
      app.setView({content: "img", contentPath: entry.data_uri, resultPath: path});
      await new Promise(function (resolve) { setTimeout(resolve, 100); });
      const img = Array.from(document.querySelectorAll("#app img")).find(function (i) { return i.src === entry.data_uri; });
      out.push({path: path, shown: !!img, width: img ? img.naturalWidth : 0, complete: img ? img.complete : false});
    }
  } catch (err) { out.push({error: String(err)}); }
  const pre = document.createElement("pre");
  pre.id = "image-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 500);
</script>
"""


def common_imports() -> str:
    """The imports at the top of workflow/rules/common.smk, verbatim."""
    return (REPO / "workflow/rules/common.smk").read_text().split("validate(config", 1)[0]


def figures_section() -> str:
    """The metrics and figures sections of workflow/rules/common.smk, verbatim."""
    text = (REPO / "workflow/rules/common.smk").read_text()
    return SECTION + text.split(SECTION, 1)[1].split(NEXT_SECTION, 1)[0]


def snakemake(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project with a 4-model registry and its metric tables, after `snakemake figures` and `--report`."""
    root = tmp_path_factory.mktemp("figures_project")
    (root / "config").mkdir()
    (root / "results/metrics").mkdir(parents=True)
    registry = synthetic_registry({"clip_zeroshot": 2, "standard": 1, "more_data": 1}, seed=4)
    registry.to_csv(root / "config/models.tsv", sep="\t", index=False)
    metrics = synthetic_metrics(
        registry,
        test_conditions=["imagenet_v2_threshold07", "imagenet_r"],
        corruptions=["fog"],
        severities=[1],
        ood_sets=["textures", "inaturalist"],
        seed=4,
    )
    metrics.to_parquet(root / "results/metrics/metrics.parquet")
    pd.DataFrame(
        {
            "grouping": ["group"],
            "group": ["standard"],
            "dataset": ["textures"],
            "score": ["msp"],
            "n_models": [1],
            "pearson_r": [float("nan")],
            "spearman_rho": [float("nan")],
        }
    ).to_csv(root / "results/metrics/ood_correlations.csv", index=False)
    (root / "config.yaml").write_text(CONFIG)
    (root / "docs").mkdir()  # the findings rule shows the simulated validation of its verdicts from docs/
    shutil.copy(REPO / FINDINGS_VALIDATION, root / FINDINGS_VALIDATION)
    (root / "Snakefile").write_text(SNAKEFILE.format(repo=REPO, imports=common_imports(), section=figures_section()))
    run = snakemake(root, "figures")
    assert run.returncode == 0, run.stderr[-4000:]
    report = snakemake(root, "figures", "--report", "report.html")
    assert report.returncode == 0, report.stderr[-4000:]
    return root


def report_results(html: str) -> dict:
    """The `results` object a Snakemake HTML report embeds (path -> caption, mime type, data URI)."""
    match = re.search(r'<script id="results">\s*var results = (.*?);\s*</script>', html, re.S)
    assert match, "no results block in the report"
    return json.loads(match.group(1))


def test_figures_target_writes_every_figure_and_table(project):
    for name in FIGURE_NAMES:
        assert (project / f"results/figures/{name}.png").stat().st_size > 0
        assert (project / f"results/figures/{name}.pdf").stat().st_size > 0
    for table in TABLE_FILES:
        assert (project / f"results/tables/{table}").stat().st_size > 0
    assert "figure ood_detection: 4 models" in (project / "results/logs/plot_ood_detection.log").read_text()


def test_deleting_a_figure_reruns_only_its_plot_rule(project):
    (project / "results/figures/calibration.pdf").unlink()
    dry = snakemake(project, "figures", "--dry-run", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout + dry.stderr, re.M))
    assert counts.get("plot_calibration") == "1"
    assert set(counts) - {"total", "job", "count"} == {"plot_calibration", "figures"}
    assert snakemake(project, "figures").returncode == 0


def test_report_holds_every_figure_and_table_with_a_rendered_caption(project):
    results = report_results((project / "report.html").read_text())
    expected = {f"results/figures/{n}.png" for n in FIGURE_NAMES} | {
        "results/tables/model_registry.csv",
        "results/tables/model_summary.csv",
        "results/tables/ood_correlations.csv",
    }
    assert expected <= set(results)
    for path in expected:
        caption = results[path]["caption"]
        assert len(caption) > 100, path
        assert "{{" not in caption and "snakemake.config" not in caption, path
    assert (
        "linear" in results["results/figures/factor_robustness.png"]["caption"]
    )  # config figures.logit_scaled_accuracy
    assert "textures, inaturalist" in results["results/figures/ood_detection.png"]["caption"]
    assert all(results[f"results/figures/{n}.png"]["mime_type"] == "image/png" for n in FIGURE_NAMES)


def test_report_lists_the_findings_table_first_with_its_caption(project):
    results = report_results((project / "report.html").read_text())
    findings = results["results/tables/findings.csv"]
    assert "verdict" in findings["caption"] and "docs/assumptions.md" in findings["caption"]
    html = (project / "report.html").read_text()
    match = re.search(r'<script id="categories">\s*var categories = (.*?);\s*</script>', html, re.S)
    assert match, "no categories block in the report"
    names = list(json.loads(match.group(1)))
    assert CATEGORY_FINDINGS in names
    # the report's menu sorts categories with localeCompare: the findings category sorts before every other one
    assert sorted(names, key=str.casefold)[0] == CATEGORY_FINDINGS
    table = pd.read_csv(project / "results/tables/findings.csv")
    assert list(table.columns[:3]) == ["claim_id", "claim", "statistic"] and len(table) >= 7


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: apt-get install -y chromium")
def test_report_renders_in_headless_chromium_and_every_figure_loads(project, tmp_path):
    html = (project / "report.html").read_text()
    head, tail = html.rsplit("</body>", 1)
    page = tmp_path / "report_check.html"
    page.write_text(head + IMAGE_CHECK + "</body>" + tail)
    dom = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    # the report's React app rendered its navigation (the loading screen is replaced by the app)
    for category in ("Factor robustness (ImageNet-X)", "OOD detection", "Calibration", "Tables"):
        assert category in dom
    assert dom.index("1. Findings") < min(dom.index(c) for c in ("Calibration", "Factor robustness", "OOD detection"))
    match = re.search(r'<pre id="image-check">(.*?)</pre>', dom, re.S)
    assert match, "the image check did not run in the report page"
    checks = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert {c.get("path") for c in checks} == {f"results/figures/{n}.png" for n in FIGURE_NAMES}, checks
    for check in checks:
        assert check["shown"] and check["complete"] and check["width"] > 100, check
