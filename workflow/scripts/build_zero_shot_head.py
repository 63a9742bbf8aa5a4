"""Rule build_zero_shot_head: one zero-shot CLIP model's text head -> results/heads/{model}.pt."""

import torch

from clip_robustness.models.build import select_device
from clip_robustness.models.zero_shot import build_head_for_row, save_head
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    device = select_device()
    head = build_head_for_row(snakemake.params.row, snakemake.params.prompt_set, device)
    save_head(head, snakemake.output[0])
    log.info(
        "%s: head %s (%s prompts x %d templates), logit scale %.4f, on %s -> %s",
        head.model_id,
        tuple(head.weights.shape),
        head.prompt_set,
        head.n_templates,
        head.logit_scale,
        device,
        snakemake.output[0],
    )
