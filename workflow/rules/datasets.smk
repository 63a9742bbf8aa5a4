# Datasets stage: download -> extract -> manifest (docs/architecture.md, "Dataset registry", "Manifest").
# Archives are fetched and extracted on the login node (localrules): compute nodes often have no internet.


localrules:
    download_archive,
    extract_archive,


rule download_archive:
    output:
        archive="data/archives/{archive}",
    log:
        "results/logs/datasets/download_archive/{archive}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        download=get_download_params,
    script:
        "../scripts/download_archive.py"


rule extract_archive:
    input:
        archive="data/archives/{archive}",
    output:
        marker="data/extracted/{archive}.complete",
    log:
        "results/logs/datasets/extract_archive/{archive}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        extract=get_extract_params,
    script:
        "../scripts/extract_archive.py"


rule build_manifest:
    input:
        unpack(get_manifest_inputs),
    output:
        manifest="data/manifests/{dataset}.parquet",
        skipped="data/manifests/{dataset}.skipped.csv",
    log:
        "results/logs/datasets/build_manifest/{dataset}.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 4
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        manifest=get_manifest_params,
        subset=get_manifest_subset,
    script:
        "../scripts/build_manifest.py"
