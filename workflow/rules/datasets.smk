# Datasets stage: download -> extract -> manifest (docs/architecture.md, "Dataset registry", "Manifest").
# Archives are fetched and extracted on the login node (localrules): compute nodes often have no internet.


localrules:
    download_archive,
    extract_archive,


rule download_archive:
    output:
        archive="data/archives/{archive}",
    params:
        download=get_download_params,
    log:
        "results/logs/datasets/download_archive/{archive}.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/download_archive.py"


rule extract_archive:
    input:
        archive="data/archives/{archive}",
    output:
        marker="data/extracted/{archive}.complete",
    params:
        extract=get_extract_params,
    log:
        "results/logs/datasets/extract_archive/{archive}.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/extract_archive.py"


rule build_manifest:
    input:
        unpack(get_manifest_inputs),
    output:
        manifest="data/manifests/{dataset}.parquet",
        skipped="data/manifests/{dataset}.skipped.csv",
    params:
        manifest=get_manifest_params,
    threads: 4
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "results/logs/datasets/build_manifest/{dataset}.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/build_manifest.py"
