"""Rule build_ablation_head: one zero-shot model's text head for one prompt set of the ablation, on CPU (text tower
only) -> results/ablation/heads/{model}/{prompt_set}.npz (clip_robustness.models.zero_shot.build_ablation_head)."""

import torch

from clip_robustness.logits.embeddings import save_head_arrays
from clip_robustness.models.zero_shot import build_ablation_head
from clip_robustness.workflow.joblog import job_log

with job_log(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    head = build_ablation_head(snakemake.params.row, snakemake.params.spec)
    save_head_arrays(
        snakemake.output[0], head.weights.numpy(), head.logit_scale, head.prompt_set, head.n_templates, head.model_id
    )
    log.info(
        "%s: prompt set %s (%s): head %s, %d templates, logit scale %.4f -> %s",
        head.model_id,
        head.prompt_set,
        snakemake.params.spec,
        tuple(head.weights.shape),
        head.n_templates,
        head.logit_scale,
        snakemake.output[0],
    )
