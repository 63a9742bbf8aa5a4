"""Rule decode_images: one dataset's images through one preprocessing geometry -> data/decoded/{dataset}/{key}.npy."""

import torch

from clip_robustness.datasets.manifest import read_manifest
from clip_robustness.logits.decoded import decode_dataset, spec_from_transform, transform_from_recipe
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    torch.set_num_threads(1)  # decoding runs in the loader's worker processes
    library, recipe = snakemake.params.spec["library"], snakemake.params.spec["recipe"]
    spec = spec_from_transform(transform_from_recipe(library, recipe), library, recipe)
    if spec.key != snakemake.wildcards.preprocessing:
        raise ValueError(f"the {library} recipe {recipe} has geometry {spec.key}, not {snakemake.wildcards.preprocessing}")
    path = decode_dataset(
        read_manifest(snakemake.input.manifest),
        spec,
        snakemake.output.npy,
        snakemake.output.metadata,
        batch_size=int(snakemake.resources.batch_size),
        num_workers=int(snakemake.resources.workers),
    )
    log.info("wrote %s", path)
