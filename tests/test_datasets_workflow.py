"""The datasets rules through the real Snakefile: archives served over HTTP on 127.0.0.1 (and a local
ImageNet val tar via downloads.local_archives) become manifests; a bad checksum stops the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from datasets_support import serve_folder

from clip_robustness.datasets.manifest import read_manifest
from clip_robustness.demo import archives as synthetic

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, registry: Path, val_tar: Path) -> Path:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["dataset_registry"] = str(registry)
    config["model_registry"] = str(REPO / config["model_registry"])
    config["datasets"] = {"in_distribution": "imagenet_val", "test_conditions": ["imagenet_v2_top_images"], "ood": []}
    config["downloads"].update(retries=1, timeout_s=10, local_archives={val_tar.name: str(val_tar)})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(tmp_path: Path, config: Path, *targets: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--configfile",
        str(config),
        "--directory",
        str(tmp_path / "work"),
        "--cores",
        "1",
        *targets,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


def test_rules_download_extract_and_build_manifests_over_http(tmp_path):
    up = tmp_path / "upstream"
    v2 = synthetic.write_imagenet_v2_tar(up, "top-images", [10, 2], 1, synthetic.default_renderer)
    val = synthetic.write_imagenet_val_tar(tmp_path / "mine", [5], 2, synthetic.default_renderer)
    with serve_folder(up) as server:
        archives = {
            v2.name: synthetic.archive_entry(v2, url=server.url(v2.name)),
            val.name: synthetic.archive_entry(val, sha256=None, user_supplied=True),
        }
        registry = synthetic.write_dataset_registry(
            tmp_path / "registry.yaml",
            archives,
            synthetic.registry_datasets(
                "imagenet_val", "imagenet_v2_top_images", registry_path=REPO / "config" / "datasets.yaml"
            ),
        )
        config = write_config(tmp_path, registry, val)
        run = snakemake(
            tmp_path, config, "data/manifests/imagenet_v2_top_images.parquet", "data/manifests/imagenet_val.parquet"
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert server.state.requests[f"/{v2.name}"] == 1
    work = tmp_path / "work"
    v2_manifest = read_manifest(work / "data/manifests/imagenet_v2_top_images.parquet")
    assert v2_manifest.table["label"].tolist() == [2, 10]
    assert (work / v2_manifest.root).is_dir()
    val_manifest = read_manifest(work / "data/manifests/imagenet_val.parquet")
    assert val_manifest.table["label"].tolist() == [5, 5]
    assert (work / "data/archives" / val.name).resolve() == val.resolve()  # verified, then linked
    assert pd.read_csv(work / "data/checksums/pinned.tsv", sep="\t")["archive"].tolist() == [val.name]
    for rule in ("download_archive", "extract_archive", "build_manifest"):
        assert any((work / "results/logs" / rule).iterdir()), rule


def test_rule_run_stops_on_checksum_mismatch_and_keeps_no_archive(tmp_path):
    up = tmp_path / "upstream"
    v2 = synthetic.write_imagenet_v2_tar(up, "top-images", [1], 1, synthetic.default_renderer)
    val = synthetic.write_imagenet_val_tar(tmp_path / "mine", [5], 1, synthetic.default_renderer)
    with serve_folder(up) as server:
        archives = {
            v2.name: {**synthetic.archive_entry(v2, url=server.url(v2.name)), "sha256": "a" * 64},
            val.name: synthetic.archive_entry(val, user_supplied=True),
        }
        registry = synthetic.write_dataset_registry(
            tmp_path / "registry.yaml",
            archives,
            synthetic.registry_datasets(
                "imagenet_val", "imagenet_v2_top_images", registry_path=REPO / "config" / "datasets.yaml"
            ),
        )
        run = snakemake(
            tmp_path, write_config(tmp_path, registry, val), "data/manifests/imagenet_v2_top_images.parquet"
        )
    assert run.returncode != 0
    log = (tmp_path / "work/results/logs/download_archive" / f"{v2.name}.log").read_text()
    assert "a" * 64 in log and server.url(v2.name) in log and "imagenet_v2_top_images" in log
    assert not (tmp_path / "work/data/archives" / v2.name).exists()
    assert len(list((tmp_path / "work/data/archives/rejected").iterdir())) == 1
    assert not (tmp_path / "work/data/manifests").exists()
