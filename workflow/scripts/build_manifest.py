"""Rule build_manifest: list one dataset's images with ImageNet-1k labels into data/manifests/{dataset}.parquet."""

from clip_robustness.datasets.manifest import build_manifest, write_manifest
from clip_robustness.datasets.registry import DatasetEntry
from clip_robustness.datasets.workflow import manifest_source, skip_corrupt
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    p = snakemake.params.manifest
    # skip_corrupt_images is read from the config, not a param: switching it must not replan every manifest
    build = build_manifest(
        DatasetEntry.from_dict(p["entry"]),
        p["root"],
        skip_corrupt=skip_corrupt(snakemake.config["downloads"]),
        workers=snakemake.threads,
        devkit_root=p.get("devkit_root"),
        subset=snakemake.params.subset,
    )
    # what it was built from (root, archives' sha256, entry, subset): compared with the config before every run plans
    build.metadata["source"] = manifest_source(p, snakemake.params.subset, list(snakemake.input))
    write_manifest(build, snakemake.output.manifest, snakemake.output.skipped)
    log.info("%s: %d images, %d skipped", p["entry"]["id"], len(build.table), len(build.skipped))
