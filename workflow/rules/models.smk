# Models stage: each model's weights fetched on the login node (localrules, like the downloads), so that
# GPU jobs on compute nodes without internet never start without them (code: clip_robustness.models.weights); and
# each zero-shot CLIP model's text head (clip_robustness.models.zero_shot), an input of its logits jobs.
#
# fetch_model_weights fetches through open_clip's and timm's own loaders into the hub cache (HF_HOME /
# HF_HUB_CACHE on the shared file system; HF_ENDPOINT for a mirror) and writes what it fetched (file,
# size, sha256, source URL) to data/weights/{model}.json. That record is an input of the model's GPU jobs
# (build_zero_shot_head, cache_logits: get_model_weights_record), so every needed fetch runs first. To fetch
# everything that needs internet (archives and weights) before queueing any GPU job (docs/cluster.md):
#   snakemake --cores 4 --profile slurm --until extract_archive fetch_model_weights


localrules:
    fetch_model_weights,


rule fetch_model_weights:
    input:
        weights=get_model_weights,
    output:
        record=names.weights_record_path("{model}"),
    log:
        log_path("fetch_model_weights", "model"),
    # Before any other ready job (decode and logits jobs included): a model whose weights cannot be had fails first.
    # An offline node without them in the cache is stopped before any job (clip_robustness.logits.startup, StartUp.before_jobs).
    priority: 10
    conda:
        "../../envs/torch.yaml"
    params:
        row=get_model_row,
    script:
        "../scripts/fetch_model_weights.py"


rule build_zero_shot_head:
    input:
        weights=get_model_weights,
        weights_record=get_model_weights_record,
    output:
        names.head_path("{model}"),
    log:
        log_path("build_zero_shot_head", "model"),
    benchmark:
        benchmark_path("build_zero_shot_head", "model")
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
