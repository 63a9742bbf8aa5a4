"""Issue 20, end to end on one finished demo study shared by every test of the module (two models, one of them
zero-shot; two datasets: the in-distribution set and one shift; decoded arrays kept): the study moved with tar or
cp -r replans no extraction, manifest, decode or logits job; a changed data source is seen without .snakemake/ and only that dataset is recomputed; a changed prompt set recomputes only the
zero-shot model; an edited registry row recomputes only that model's head, logits and metrics; a shared cache gives
the figures, tables, findings and report in a fresh clone with no dataset, no weights and no GPU, the prompt-set
ablation's included (its embeddings, heads and prompt file travel in the cache)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import FINDINGS_VALIDATION, ROOT, make_demo_workdir
from demo_support import job_stats, snakemake_in
from safetensors.torch import load_file, save_file

from clip_robustness.figures import FIGURE_NAMES
from clip_robustness.logits.cache import read_metadata
from clip_robustness.workflow.share import SharedCacheError, from_cache_rules, unpack

pytestmark = pytest.mark.integration

MODELS = ["timm__test_resnet.demo", "openclip__clip_tiny_demo__demo"]
#: The in-distribution set and one shift: the changed-source test changes the shift and checks that the other one's
#: manifest, decoded arrays and logits stay the same bytes.
DATASETS = ["imagenet_val", "imagenet_sketch"]
SMALL = {
    "models": MODELS,
    "datasets": {
        "in_distribution": "imagenet_val",
        "test_conditions": ["imagenet_sketch"],
        "ood": [],
        "imagenet_c": {"corruptions": [], "severities": []},
        "cue_conflict": [],
    },
    "inference": {"keep_decoded": True},
    # the prompt-set ablation (CPU, from the embeddings) is tested in test_demo_pipeline.py; here the logits stage
    "zero_shot": {"prompt_set": "openai", "ablation_prompt_sets": []},
}
COMMAND = ["--configfile", "config/demo.yaml", "config/small.yaml", "--cores", "2"]
#: What a moved study or a shared cache must never plan again.
EXPENSIVE = {
    "download_archive",
    "extract_archive",
    "build_manifest",
    "decode_images",
    "decode_images_imagenet_c",
    "fetch_model_weights",
    "build_zero_shot_head",
    "cache_logits",
    "cache_logits_imagenet_c",
    "cache_logits_zero_shot",
    "cache_logits_zero_shot_imagenet_c",
}
#: The reruns after a change stop at the logits, asked for as targets (metrics, figures and tables read them like after
#: any other change; tests/test_demo_pipeline.py covers them): 2 of the 16 jobs such a rerun would otherwise run, but
#: most of its time.
LOGITS_RULES = [
    "download_archive",
    "extract_archive",
    "build_manifest",
    "decode_images",
    "fetch_model_weights",
    "build_zero_shot_head",
    "cache_logits",
    "cache_logits_zero_shot",
]
ALL_LOGITS = [f"results/logits/{model}/{dataset}.parquet" for model in MODELS for dataset in DATASETS]
UP_TO_LOGITS = [*ALL_LOGITS, "--allowed-rules", *LOGITS_RULES]
#: ... and the models' metric tables (the edited registry row).
UP_TO_MODEL_METRICS = [
    *ALL_LOGITS,
    *(f"results/metrics/models/{model}.parquet" for model in MODELS),
    "--allowed-rules",
    *LOGITS_RULES,
    "compute_model_metrics",
]
#: ... and the metrics table over models, as the only target (the changed data source: an explicit target).
METRICS_TABLE = "results/metrics/metrics.parquet"
UP_TO_METRICS_TABLE = [METRICS_TABLE, "--allowed-rules", *LOGITS_RULES, "compute_model_metrics", "aggregate_metrics"]
#: A clone has these beside the workflow (the Makefile's venv target reads the first two).
CLONE_FILES = ("Makefile", "requirements.txt", "pyproject.toml")


def snakemake(workdir: Path, *extra: str, command: list[str] = COMMAND) -> subprocess.CompletedProcess:
    return snakemake_in(workdir, *command, *extra)


def make(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """A Makefile target as typed in ``workdir``, with this checkout's virtual environment."""
    venv = Path(sys.executable).parent.parent
    return subprocess.run(
        ["make", *args, f"VENV={venv}", f"PY={sys.executable}", f"SNAKEMAKE={sys.executable} -m snakemake"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checksums(workdir: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(workdir)): sha256(p) for p in sorted(workdir.glob(pattern))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, demo_upstream) -> Path:
    workdir = make_demo_workdir(tmp_path_factory.mktemp("cache_travels"), demo_upstream)
    for name in CLONE_FILES:
        shutil.copy2(ROOT / name, workdir / name)
    (workdir / "config/small.yaml").write_text(yaml.safe_dump(SMALL))
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def assert_nothing_expensive_planned(workdir: Path) -> dict[str, int]:
    dry_run = snakemake(workdir, "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr[-4000:]
    planned = job_stats(dry_run)
    assert not EXPENSIVE & set(planned), planned
    return planned


def assert_markers_match_archives(workdir: Path) -> None:
    for marker in (workdir / "data/extracted").glob("*.complete"):
        record = json.loads(marker.read_text())
        assert record["archive_mtime_ns"] == (workdir / "data/archives" / record["archive"]).stat().st_mtime_ns


def test_study_moved_with_tar_plans_no_extraction_manifest_decode_or_logits_job(finished, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    subprocess.run(f"tar -C {finished} -cf - . | tar -C {moved} -xf -", shell=True, check=True)  # whole seconds
    logits = checksums(moved, "results/logits/*/*.parquet")
    assert assert_nothing_expensive_planned(moved) == {}
    assert_markers_match_archives(moved)  # hashed once, markers refreshed: the next run costs one stat each
    assert checksums(moved, "results/logits/*/*.parquet") == logits


def test_study_copied_with_cp_r_plans_no_extraction_manifest_decode_or_logits_job(finished, tmp_path):
    copied = tmp_path / "copied"
    subprocess.run(["cp", "-r", str(finished), str(copied)], check=True)  # fresh modification times, in any order
    logits = checksums(copied, "results/logits/*/*.parquet")
    assert_nothing_expensive_planned(copied)
    assert_markers_match_archives(copied)
    assert checksums(copied, "results/logits/*/*.parquet") == logits
    assert snakemake(copied).returncode == 0
    assert checksums(copied, "results/logits/*/*.parquet") == logits


def test_changed_source_without_snakemake_metadata_recomputes_only_that_dataset_whatever_the_target(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir, symlinks=True)
    shutil.rmtree(workdir / ".snakemake")
    folder = tmp_path / "my_sketch"
    shutil.copytree(workdir / "data/extracted/ImageNet-Sketch.zip/sketch", folder)
    removed = sorted(folder.rglob("*.JPEG"))[0]
    removed.unlink()  # the new folder has one image fewer
    (workdir / "config/small.yaml").write_text(
        yaml.safe_dump({**SMALL, "downloads": {"local_folders": {"imagenet_sketch": str(folder)}}})
    )
    others = {
        **checksums(workdir, "results/logits/*/imagenet_val.parquet"),
        **checksums(workdir, "data/manifests/imagenet_val.parquet"),
        **checksums(workdir, "data/decoded/imagenet_val/*.npy"),
    }
    assert len(others) >= 4, others
    for log in (workdir / "results/logs/decode_images").glob("*.log"):
        log.unlink()  # job logs are appended to: keep only this run's
    # Explicit targets, not the default one (whose targets include every manifest and logits file): the check before
    # planning leaves nothing computed from the old source on disk, so each target replans the chain back to the
    # manifest, whether it is a figure, a logits file of the dataset or (the real run below) the metrics table.
    figure = f"results/figures/{FIGURE_NAMES[0]}.png"
    dry_run = snakemake(workdir, "--dry-run", figure)
    assert dry_run.returncode == 0, dry_run.stderr[-4000:]
    warnings = dry_run.stdout + dry_run.stderr  # a dry run logs to stdout
    assert "data/manifests/imagenet_sketch.parquet: its source changed" in warnings
    assert str(folder) in warnings
    chain = {
        "build_manifest",
        "decode_images",
        "cache_logits",
        "cache_logits_zero_shot",
        "compute_model_metrics",
        "aggregate_metrics",
    }  # the small study: classifiers and a zero-shot model (its logits rule writes embeddings)
    planned = job_stats(dry_run)
    assert chain | {f"plot_{FIGURE_NAMES[0]}"} <= set(planned) and "extract_archive" not in planned, planned
    planned = job_stats(snakemake(workdir, "--dry-run", f"results/logits/{MODELS[0]}/imagenet_sketch.parquet"))
    assert set(planned) == {"build_manifest", "decode_images", "cache_logits"}, planned
    result = snakemake(workdir, *UP_TO_METRICS_TABLE)
    assert result.returncode == 0, result.stderr[-4000:]
    ran = job_stats(result)
    assert set(ran) == chain and ran["build_manifest"] == 1, ran
    assert ran["compute_model_metrics"] == len(MODELS) and ran["aggregate_metrics"] == 1, ran
    manifest = json.loads(
        pq.read_schema(workdir / "data/manifests/imagenet_sketch.parquet").metadata[b"clip_robustness"]
    )
    assert manifest["root"] == str(folder)
    for model in MODELS:
        metadata = read_metadata(workdir / f"results/logits/{model}/imagenet_sketch.parquet")
        assert metadata["manifest_hash"] == manifest["manifest_hash"]
        assert metadata["n_images"] == manifest["n_images"]
    metrics = pd.read_parquet(workdir / METRICS_TABLE)
    before = pd.read_parquet(finished / METRICS_TABLE)
    assert set(metrics["model"]) == set(MODELS) and set(metrics["dataset"]) == set(before["dataset"])
    # the other datasets' manifests, decoded arrays and logits are the very same bytes, and were not decoded again
    assert {path: sha256(workdir / path) for path in others} == others
    logs = list((workdir / "results/logs/decode_images").glob("*.log"))
    assert len(logs) == 2  # the demo's two decode geometries, each re-run for imagenet_sketch
    for log in logs:
        text = log.read_text()
        assert "imagenet_val" in text and "kept" in text, text[-2000:]
        written = re.findall(r"decoded \d+ images to (\S+)", text)
        assert len(written) == 1 and "/imagenet_sketch/" in written[0], text[-2000:]  # one array written
    assert job_stats(snakemake(workdir, "--dry-run", *UP_TO_METRICS_TABLE)) == {}


def test_changed_prompt_set_recomputes_only_the_zero_shot_models_head_and_logits(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir, symlinks=True)
    shutil.rmtree(workdir / ".snakemake")
    before = checksums(workdir, "results/logits/*/*.parquet")
    (workdir / "config/small.yaml").write_text(
        yaml.safe_dump({**SMALL, "zero_shot": {"prompt_set": "simple", "ablation_prompt_sets": []}})
    )
    result = snakemake(workdir, *UP_TO_LOGITS)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "zero_shot.prompt_set" in result.stderr
    ran = job_stats(result)
    # the zero-shot model's logits job (which also rewrites its embeddings); the classifier's is kept
    assert ran["build_zero_shot_head"] == 1 and ran["cache_logits_zero_shot"] == 1 and "cache_logits" not in ran, ran
    assert not {"extract_archive", "build_manifest", "decode_images"} & set(ran), ran
    after = checksums(workdir, "results/logits/*/*.parquet")
    changed = {path.split("/")[2] for path in before if before[path] != after[path]}
    assert changed == {"openclip__clip_tiny_demo__demo"}
    assert all(
        read_metadata(workdir / f"results/logits/openclip__clip_tiny_demo__demo/{d}.parquet")["prompt_set"] == "simple"
        for d in DATASETS
    )


def test_edited_registry_row_recomputes_only_that_models_head_logits_and_metrics(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir, symlinks=True)
    shutil.rmtree(workdir / ".snakemake")  # judged by content: what the files record, not Snakemake's metadata
    edited, other = "openclip__clip_tiny_demo__demo", "timm__test_resnet.demo"
    # The row now names other weights (every tensor scaled by 1.01): the model's images and prompts encode otherwise.
    registry_path = workdir / "config/demo/models.tsv"
    registry = pd.read_csv(registry_path, sep="\t", dtype=str, keep_default_na=False)
    row = registry["model_id"] == edited
    weights = load_file(workdir / registry.loc[row, "weights_file"].item())
    (workdir / "weights").mkdir()
    save_file(
        {name: tensor * 1.01 if tensor.is_floating_point() else tensor for name, tensor in weights.items()},
        workdir / "weights/retrained.safetensors",
    )
    registry.loc[row, "weights_file"] = "weights/retrained.safetensors"
    registry.to_csv(registry_path, sep="\t", index=False)
    kept = {
        **checksums(workdir, f"results/logits/{other}/*.parquet"),
        **checksums(workdir, f"results/metrics/models/{other}.parquet"),
        **checksums(workdir, f"data/weights/{other}.json"),
    }
    assert len(kept) == len(DATASETS) + 2, kept
    before = {**checksums(workdir, f"results/logits/{edited}/*.parquet"), **checksums(workdir, "results/heads/*")}
    result = snakemake(workdir, *UP_TO_MODEL_METRICS)
    assert result.returncode == 0, result.stderr[-4000:]
    ran = job_stats(result)
    assert {
        rule: ran.get(rule)
        for rule in ("fetch_model_weights", "build_zero_shot_head", "cache_logits_zero_shot", "compute_model_metrics")
    } == dict.fromkeys(
        ("fetch_model_weights", "build_zero_shot_head", "cache_logits_zero_shot", "compute_model_metrics"), 1
    ), ran
    assert "cache_logits" not in ran, ran
    assert not {"extract_archive", "build_manifest", "decode_images"} & set(ran), ran
    assert {path: sha256(workdir / path) for path in kept} == kept  # the other model: the very same bytes
    after = {**checksums(workdir, f"results/logits/{edited}/*.parquet"), **checksums(workdir, "results/heads/*")}
    assert set(after) == set(before) and all(after[path] != before[path] for path in before), (before, after)
    record = json.loads((workdir / f"data/weights/{edited}.json").read_text())
    assert [f["sha256"] for f in record["files"]] == [sha256(workdir / "weights/retrained.safetensors")]
    for dataset in DATASETS:
        metadata = read_metadata(workdir / f"results/logits/{edited}/{dataset}.parquet")
        assert metadata["weights_sha256"] == [f["sha256"] for f in record["files"]]
    assert job_stats(snakemake(workdir, "--dry-run", *UP_TO_MODEL_METRICS)) == {}


#: The shared study also runs a prompt-set ablation (a built-in set and a prompt file of the checkout), so its
#: cache carries the embeddings, the ablation heads and the prompt file.
ABLATION = {"zero_shot": {"prompt_set": "openai", "ablation_prompt_sets": ["one_template", "config/mine.yaml"]}}
SHARE_COMMAND = [*COMMAND[:3], "config/ablation.yaml", *COMMAND[3:]]


@pytest.fixture(scope="module")
def shared_cache(finished) -> Path:
    (finished / "config/mine.yaml").write_text('templates: ["a blurry photo of a {}.", "a sketch of the {}."]\n')
    (finished / "config/ablation.yaml").write_text(yaml.safe_dump(ABLATION))
    ablation = snakemake(finished, command=SHARE_COMMAND)
    assert ablation.returncode == 0, ablation.stderr[-4000:]
    assert not EXPENSIVE & set(job_stats(ablation)), job_stats(ablation)  # the ablation reruns no logits job
    result = make(finished, "share-cache", f"SNAKEMAKE_ARGS={' '.join(SHARE_COMMAND)}")
    assert result.returncode == 0, result.stderr[-4000:]
    return finished / "results/shared_cache.tar"


def test_figures_from_a_shared_cache_in_a_fresh_clone_plan_only_what_reads_the_cache(finished, shared_cache, tmp_path):
    clone = tmp_path / "clone"  # no data/, no dataset, no weights (the demo's upstream is not there either)
    clone.mkdir()
    for name in (*CLONE_FILES, "Snakefile", "config.yaml"):
        shutil.copy2(ROOT / name, clone / name)
    for folder in ("workflow", "config", "envs", "profiles"):
        shutil.copytree(ROOT / folder, clone / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "docs").mkdir()
    shutil.copy2(ROOT / FINDINGS_VALIDATION, clone / FINDINGS_VALIDATION)
    result = make(clone, "figures-from-cache", f"CACHE={shared_cache}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    ran = job_stats(result)
    assert ran and set(ran) <= set(from_cache_rules(FIGURE_NAMES)), ran
    assert not (clone / "data/archives").exists() and not (clone / "data/extracted").exists()
    pd.testing.assert_frame_equal(
        pd.read_parquet(clone / "results/metrics/metrics.parquet"),
        pd.read_parquet(finished / "results/metrics/metrics.parquet"),
    )
    assert len(pd.read_csv(clone / "results/tables/findings.csv")) > 0
    assert len(list((clone / "results/figures").glob("*.png"))) >= 5
    assert (clone / "results/report.html").stat().st_size > 10_000
    # the prompt-set ablation, recomputed from the packed embeddings and heads (no head is rebuilt: no weights here)
    assert ran.get("prompt_set_metrics") == 2 and ran.get("plot_prompt_sets") == 1 and "build_ablation_head" not in ran
    assert (clone / "config/mine.yaml").read_bytes() == (finished / "config/mine.yaml").read_bytes()
    table = "results/ablation/prompt_set_metrics.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(clone / table), pd.read_parquet(finished / table))
    assert (clone / "results/figures/prompt_sets.png").stat().st_size > 0
    findings = pd.read_csv(clone / "results/tables/findings.csv")
    assert findings["claim_id"].str.startswith("prompt-").any()


def test_a_changed_member_of_a_shared_cache_is_refused_naming_it_and_nothing_is_written(shared_cache, tmp_path):
    broken = tmp_path / "broken.tar"
    with tarfile.open(shared_cache) as source, tarfile.open(broken, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name.endswith("imagenet_sketch.parquet") and "timm" in member.name:
                data = data[:-10] + bytes(10)
            target.addfile(member, io.BytesIO(data))
    workdir = tmp_path / "clone"
    workdir.mkdir()
    with pytest.raises(SharedCacheError, match="results/logits/timm__test_resnet.demo/imagenet_sketch.parquet: sha256"):
        unpack(broken, workdir)
    assert [p.name for p in workdir.iterdir()] == []
