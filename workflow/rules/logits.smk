# Logits stage (SPEC section 3): each model's 1000 ImageNet logits on each dataset, cached as parquet.
# Code: clip_robustness.models.build (models, transforms, weights), clip_robustness.models.zero_shot
# (text heads), clip_robustness.inference (the loop), clip_robustness.logits_cache (the file contract).
#
# How jobs are cut: one cache_logits job per (model, dataset).
# - Rerun granularity: a new dataset, a rebuilt manifest or a failed job recomputes one file, never a
#   model's other datasets; `--forcerun cache_logits --until ...` or deleting one parquet is enough.
# - Model load is cheap next to inference (seconds from the local hub cache; ~30 s for ViT-bigG-14)
#   against minutes to hours of images per dataset; the text head, the one costly per-model step
#   (1000 classes x 80 prompts), is built once per model by build_zero_shot_head and reused.
# - On the cluster, the profile may bundle a model's jobs into one SLURM allocation with
#   `groups: cache_logits=logits` and `group-components: logits=8`, which saves queueing and
#   Snakemake start-up per job (each job still loads its model).
#
# Compute knobs are resources (changing them reruns nothing): batch_size (first try; halved on
# out-of-memory), workers (DataLoader processes), mem_mb, runtime. GPUs are requested by the cluster
# profile, not here, so a local CPU run is never blocked on a `gpu` resource:
#   set-resources: {cache_logits: {gpu: 1, cpus_per_gpu: 8, batch_size: 512, workers: 7},
#                   build_zero_shot_head: {gpu: 1}}
# Without a GPU everything runs on CPU in float32 (slow: ~30 images/s for ViT-B-32).


rule build_zero_shot_head:
    input:
        weights=get_model_weights,
    output:
        "results/heads/{model}.pt",
    params:
        row=get_model_row,
        prompt_set=config["zero_shot"]["prompt_set"],
    log:
        "results/logs/build_zero_shot_head/{model}.log",
    benchmark:
        "results/benchmarks/build_zero_shot_head/{model}.tsv"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/build_zero_shot_head.py"


rule cache_logits:
    input:
        unpack(get_cache_logits_input),
    output:
        "results/logits/{model}/{dataset}.parquet",
    params:
        row=get_model_row,
        prompt_set=config["zero_shot"]["prompt_set"],
        precision=config["inference"]["precision"],
        allow_tf32=config["inference"].get("allow_tf32", True),
    log:
        "results/logs/cache_logits/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/cache_logits/{model}/{dataset}.tsv"
    threads: 4
    resources:
        batch_size=256,
        workers=get_loader_workers,
        mem_mb=16000,
        runtime=240,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/cache_logits.py"
