# Datasets stage: download -> extract -> manifest (docs/architecture.md, "Dataset registry", "Manifest").
# Archives are fetched and extracted on the login node (localrules): compute nodes often have no internet.


localrules:
    download_archive,
    extract_archive,


rule download_archive:
    output:
        archive=names.archive_path("{archive}"),
    log:
        log_path("download_archive", "archive"),
    conda:
        "../../envs/analysis.yaml"
    params:
        download=get_download_params,
    script:
        "../scripts/download_archive.py"


rule extract_archive:
    input:
        archive=names.archive_path("{archive}"),
    output:
        marker=names.extraction_marker("{archive}"),
    log:
        log_path("extract_archive", "archive"),
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
        manifest=manifest_path("{dataset}"),
        skipped=names.skipped_path("{dataset}"),
    log:
        log_path("build_manifest", "dataset"),
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
