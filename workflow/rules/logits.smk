# Logits stage (SPEC section 3): each model's 1000 ImageNet logits on each dataset, cached as parquet.
# Code: clip_robustness.models.build (models, transforms, weights), clip_robustness.models.zero_shot
# (text heads), clip_robustness.logits.loop (the loop), clip_robustness.logits.cache (the file contract).
#
# How jobs are cut: one cache_logits job per (model, dataset).
# - Rerun granularity: a new dataset, a rebuilt manifest or a failed job recomputes one file, never a
#   model's other datasets; `--forcerun cache_logits --until ...` or deleting one parquet is enough.
# - Model load is cheap next to inference (seconds from the local hub cache; ~30 s for ViT-bigG-14)
#   against minutes to hours of images per dataset; the text head, the one costly per-model step
#   (1000 classes x 80 prompts), is built once per model by build_zero_shot_head and reused.
# - On the cluster, profiles/slurm bundles all cache jobs of one model into one GPU job
#   (`groups: cache_logits: "cache_{model}"`), which saves queueing and Snakemake start-up per job
#   (each member still loads its model): 210 GPU jobs for the study instead of 18,480 (docs/cluster.md).
#
# Compute knobs are resources (changing them reruns nothing): batch_size (first try; halved on
# out-of-memory), workers (DataLoader processes), mem_mb, runtime. GPUs are requested by the cluster
# profile, not here, so a local CPU run is never blocked on a `gpu` resource:
#   set-resources: {cache_logits: {gpu: 1, cpus_per_gpu: 8, batch_size: 512, workers: 7},
#                   build_zero_shot_head: {gpu: 1}}
# Without a GPU everything runs on CPU in float32 (slow: ~30 images/s for ViT-B-32).
#
# Fast path (config inference.decoded_cache, default true; docs/performance.md): decode_images decodes a
# dataset once per preprocessing geometry (resize, crop, interpolation; key e.g. 224x224-bicubic-22a5df8d59)
# into a uint8 array on CPU workers; every cache_logits job of a model with that geometry streams it and
# normalises on the device, so the GPU is not left waiting on JPEG decoding. The arrays are temp() files
# (deleted after their last consumer) unless inference.keep_decoded. With decoded_cache false, each
# cache_logits job decodes its images itself (the reference path); the cache metadata records which ran.


rule decode_images:
    input:
        manifest="data/manifests/{dataset}.parquet",
    output:
        npy=decoded_output("data/decoded/{dataset}/{preprocessing}.npy"),
        metadata=decoded_output("data/decoded/{dataset}/{preprocessing}.json"),
    log:
        "results/logs/decode_images/{dataset}/{preprocessing}.log",
    benchmark:
        "results/benchmarks/decode_images/{dataset}/{preprocessing}.tsv"
    wildcard_constraints:
        preprocessing=r"[0-9]+x[0-9]+-[a-z-]+-[0-9a-f]{10}",
    conda:
        "../../envs/torch.yaml"
    threads: 4
    resources:
        workers=get_decode_workers,
        batch_size=64,
        mem_mb=4000,
        runtime=240,
    params:
        spec=get_decode_params,
    script:
        "../scripts/decode_images.py"


rule build_zero_shot_head:
    input:
        weights=get_model_weights,
        weights_record=get_model_weights_record,
    output:
        "results/heads/{model}.pt",
    log:
        "results/logs/build_zero_shot_head/{model}.log",
    benchmark:
        "results/benchmarks/build_zero_shot_head/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=60,
    params:
        row=get_model_row,
        prompt_set=config["zero_shot"]["prompt_set"],
    script:
        "../scripts/build_zero_shot_head.py"


rule cache_logits:
    input:
        unpack(get_cache_logits_input),
    output:
        "results/logits/{model}/{dataset}.parquet",
    log:
        "results/logs/cache_logits/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/cache_logits/{model}/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 4
    resources:
        batch_size=256,
        workers=get_loader_workers,
        mem_mb=16000,
        runtime=240,
    params:
        row=get_model_row,
        prompt_set=config["zero_shot"]["prompt_set"],
        precision=config["inference"]["precision"],
        allow_tf32=config["inference"]["allow_tf32"],
        cpu_autocast=config["inference"]["cpu_autocast"],
    script:
        "../scripts/cache_logits.py"
