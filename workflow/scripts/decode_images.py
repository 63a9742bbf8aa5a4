"""Rules decode_images, decode_images_imagenet_c: a group of datasets through one preprocessing geometry ->
data/decoded/{dataset}/{key}.npy each, under the decoded-array disk budget (inference.decoded_budget_gb)."""

import torch

from clip_robustness.datasets.manifest import read_manifest
from clip_robustness.logits.budget import budget_bytes
from clip_robustness.logits.decoded import decode_group
from clip_robustness.logits.geometry import spec_from_transform, transform_from_recipe
from clip_robustness.names import DECODED_DIR
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    torch.set_num_threads(1)  # decoding runs in the loader's worker processes
    library, recipe = snakemake.params.spec["library"], snakemake.params.spec["recipe"]
    spec = spec_from_transform(transform_from_recipe(library, recipe), library, recipe)
    if spec.key != snakemake.wildcards.preprocessing:
        raise ValueError(
            f"the {library} recipe {recipe} has geometry {spec.key}, not {snakemake.wildcards.preprocessing}"
        )
    paths = decode_group(
        [read_manifest(path) for path in snakemake.input.manifests],
        spec,
        snakemake.output.npy,
        snakemake.output.metadata,
        budget_bytes=budget_bytes(snakemake.config["inference"]["decoded_budget_gb"]),  # not a param: no rerun
        budget_root=DECODED_DIR,  # where the disk-budget ledger lives, beside the arrays
        job=f"{snakemake.rule} {dict(snakemake.wildcards)}",
        batch_size=int(snakemake.resources.batch_size),
        num_workers=int(snakemake.resources.workers),
    )
    log.info("wrote %d decoded arrays", len(paths))
