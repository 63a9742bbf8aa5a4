# Logits stage (docs/architecture.md, "Logits cache"): each model's 1000 ImageNet logits on each dataset, cached as parquet.
# Code: clip_robustness.models.build (models, transforms, weights), clip_robustness.models.zero_shot
# (text heads), clip_robustness.logits.loop (the loop), clip_robustness.logits.cache (the file contract).
#
# How jobs are cut (clip_robustness.logits.cutting, docs/performance.md "Job cutting"): per model, one cache_logits
# job over the core datasets (every dataset of the study but ImageNet-C) and one cache_logits_imagenet_c job per
# ImageNet-C group {imagenet_c_group} (config inference.imagenet_c_jobs: per_severity, the default, one job per
# severity over every corruption; per_corruption, one per corruption over its severities): 6 jobs per model in the
# full study instead of 88, each paying the fixed costs (interpreter, imports, model build, weight load, CUDA
# start-up) once (clip_robustness.logits.job).
# - Contracts kept: one parquet per (model, dataset), each with its own metadata, each written atomically as soon
#   as it is computed.
# - Rerun granularity: outputs are update() files, which Snakemake leaves in place when it reruns a group; the job
#   keeps every output that is current (metadata of this model, manifest, prompt set and precision; newer than its
#   manifest, head and weights) and computes the rest. A new dataset or a rebuilt manifest therefore computes only
#   its own files (plus one model build per model). To recompute valid files, delete them: `make rerun-model`
#   deletes the model's logits first; `--forcerun cache_logits` alone keeps current files.
# - Decoding is cut the same way (decode_images: one job per preprocessing geometry for the core datasets;
#   decode_images_imagenet_c: one per (ImageNet-C group, geometry)), so a logits job's inputs appear together and the
#   decoded-disk budget (inference.decoded_budget_gb, clip_robustness.logits.budget) reserves a whole group at
#   once; logits jobs have priority over decode jobs, so ready consumers free space before more is decoded.
# - On the cluster, profiles/slurm groups a model's logits jobs into one GPU job (docs/cluster.md).
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
        manifests=get_group_manifests,
    output:
        npy=decoded_outputs(names.decoded_path, core=True),
        metadata=decoded_outputs(names.decoded_metadata_path, core=True),
    log:
        log_path("decode_images", "preprocessing"),
    benchmark:
        benchmark_path("decode_images", "preprocessing")
    conda:
        "../../envs/torch.yaml"
    threads: 4
    resources:
        workers=decode_workers,
        batch_size=64,
        mem_mb=4000,
        runtime=240,
    params:
        spec=get_decode_params,
    script:
        "../scripts/decode_images.py"


use rule decode_images as decode_images_imagenet_c with:
    output:
        npy=decoded_outputs(names.decoded_path, core=False),
        metadata=decoded_outputs(names.decoded_metadata_path, core=False),
    log:
        log_path("decode_images_imagenet_c", "preprocessing", "imagenet_c_group"),
    benchmark:
        benchmark_path("decode_images_imagenet_c", "preprocessing", "imagenet_c_group")


rule cache_logits:
    input:
        unpack(get_cache_group_input),
    output:
        logits=logits_outputs(core=True),
    log:
        log_path("cache_logits", "model"),
    benchmark:
        benchmark_path("cache_logits", "model")
    priority: 1
    conda:
        "../../envs/torch.yaml"
    threads: 4
    resources:
        batch_size=256,
        workers=loader_workers,
        mem_mb=16000,
        runtime=240,
    params:
        datasets=get_cache_group_params,
        row=get_model_row,
        prompt_set=config["zero_shot"]["prompt_set"],
        precision=config["inference"]["precision"],
        allow_tf32=config["inference"]["allow_tf32"],
        cpu_autocast=config["inference"]["cpu_autocast"],
    script:
        "../scripts/cache_logits.py"


use rule cache_logits as cache_logits_imagenet_c with:
    output:
        logits=logits_outputs(core=False),
    log:
        log_path("cache_logits_imagenet_c", "model", "imagenet_c_group"),
    benchmark:
        benchmark_path("cache_logits_imagenet_c", "model", "imagenet_c_group")


# Zero-shot models (inference.cache_embeddings): the same jobs also write each dataset's L2-normalised image embeddings
# (float16, clip_robustness.logits.embeddings) beside its logits, from the same forward pass. Their {model} is one of
# the embedding models (STUDY.embedding_models), and the ruleorder gives their files to these rules; the
# prompt-set ablation (ablation.smk) derives any other text head's logits from them on CPU.
use rule cache_logits as cache_logits_zero_shot with:
    output:
        logits=logits_outputs(core=True),
        embeddings=embeddings_outputs(core=True),
    log:
        log_path("cache_logits_zero_shot", "model"),
    benchmark:
        benchmark_path("cache_logits_zero_shot", "model")
    wildcard_constraints:
        model=STUDY.embedding_model_pattern(),


use rule cache_logits as cache_logits_zero_shot_imagenet_c with:
    output:
        logits=logits_outputs(core=False),
        embeddings=embeddings_outputs(core=False),
    log:
        log_path("cache_logits_zero_shot_imagenet_c", "model", "imagenet_c_group"),
    benchmark:
        benchmark_path("cache_logits_zero_shot_imagenet_c", "model", "imagenet_c_group")
    wildcard_constraints:
        model=STUDY.embedding_model_pattern(),


ruleorder: cache_logits_zero_shot > cache_logits
ruleorder: cache_logits_zero_shot_imagenet_c > cache_logits_imagenet_c
