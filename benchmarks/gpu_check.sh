#!/usr/bin/env bash
# One short device session (<= 8 minutes on one GPU), study-shaped: does the logits job feed each model at its forward
# speed, and is `make plan` right about it?
#
#     bash benchmarks/gpu_check.sh            # from the repository root, on a GPU node, with the project's .venv
#     DEVICE=cpu N_IMAGES=8 BATCH_SIZE=8 FORWARD_BATCHES=1 N_STARTUP=16 bash benchmarks/gpu_check.sh  # CPU smoke run
#
# 1. benchmarks/bench_group_job.py for open_clip ViT-B-32, timm resnet50, open_clip RN50 and ViT-B-16 (random weights,
#    offline) at bf16: one logits group job (the pipeline's own, decoded path) over three datasets of N_IMAGES images
#    each, made without JPEGs (224-px decoded arrays written once, shared by the four models): forward img/s (the model
#    alone on batches already on the device), end to end img/s (first batch to last parquet written), their ratio
#    (goal >= 0.8x), the exposed time per dataset, and the plan's prediction for the job's compute (H100 rows of
#    config/throughput.tsv, PLAN_GPU) beside the measured time;
# 2. benchmarks/bench_loader.py on the device (the decoded loader alone, pinned and copied to the GPU, 224/384/600 px)
#    and benchmarks/bench_cpu_budget.py (the job's CPU work per image on this node's cores);
# 3. benchmarks/bench_job_startup.py for open_clip ViT-B-32 and timm resnet50: the fixed cost of one logits job
#    (fresh process) over 1 and 3 datasets of N_STARTUP generated JPEGs;
# 4. the CUDA-only tests (skipped on CPU machines);
# 5. one JSON (benchmarks/out/gpu_check.json) and one markdown table (benchmarks/out/gpu_check.md).
# Knobs (environment): N_IMAGES (32768), DATASETS (3), BATCH_SIZE (256), PRECISION (bf16), PLAN_GPU (H100),
# FORWARD_BATCHES (20), N_STARTUP (512), DEVICE (cuda), MAX_S (420: a step that would start later is skipped and
# named in the output, so the whole check stays within 8 minutes of GPU time, the report included). Disk: DATASETS x N_IMAGES x 150 KB (14.8 GB by default) under a
# temp folder, removed at exit. Record the table in docs/performance.md ("GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-benchmarks/out}
N_IMAGES=${N_IMAGES:-32768}
DATASETS=${DATASETS:-3}
BATCH_SIZE=${BATCH_SIZE:-256}
PRECISION=${PRECISION:-bf16}
PLAN_GPU=${PLAN_GPU:-H100}
FORWARD_BATCHES=${FORWARD_BATCHES:-20}
N_STARTUP=${N_STARTUP:-512}
DEVICE=${DEVICE:-cuda}
WORKERS=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
MAX_S=${MAX_S:-420}
started=$(date +%s)
stamp() { echo "gpu_check: $1 at $(( $(date +%s) - started )) s"; }
in_time() {  # step name: true while the check is within MAX_S seconds, else says the step is skipped
    if [ $(( $(date +%s) - started )) -lt "$MAX_S" ]; then return 0; fi
    echo "gpu_check: $1 skipped: past MAX_S=$MAX_S s"; return 1
}

if [ "$DEVICE" = cuda ]; then
    "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh: no CUDA device visible")'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu_check_device.txt" || true
else
    echo "cpu ($(nproc) cores), smoke run" > "$OUT/gpu_check_device.txt"
fi

run_group() {  # library architecture
    in_time "group job of $1 $2" || return 0
    timeout 150 "$PY" benchmarks/bench_group_job.py --library "$1" --architecture "$2" --device "$DEVICE" \
        --precision "$PRECISION" --datasets "$DATASETS" --n-images "$N_IMAGES" --batch-size "$BATCH_SIZE" \
        --forward-batches "$FORWARD_BATCHES" --repeats 1 --gpu "$PLAN_GPU" --data "$WORK/data" --workdir "$WORK" \
        --out "$OUT" 2>&1 | grep -v "img/s]" | tail -7 || echo "gpu_check: group job of $1 $2 failed or timed out"
    stamp "$1 $2 done"
}
run_group open_clip ViT-B-32
run_group timm resnet50
run_group open_clip RN50
run_group open_clip ViT-B-16
rm -rf "$WORK/data"

if in_time "bench_loader"; then
    timeout 90 "$PY" benchmarks/bench_loader.py --device "$DEVICE" --repeats 3 --baseline-repeats 0 --workdir "$WORK" \
        --out "$OUT" 2>&1 | tail -5 || echo "gpu_check: bench_loader failed or timed out"
fi
if in_time "bench_cpu_budget"; then
    timeout 60 "$PY" benchmarks/bench_cpu_budget.py --repeats 3 --workdir "$WORK" --out "$OUT" 2>&1 | tail -8 \
        || echo "gpu_check: bench_cpu_budget failed or timed out"
fi
stamp "loader and CPU budget done"

# The fixed cost of one job: fresh processes over generated JPEGs (the start-up does not depend on the images).
if in_time "job start-up"; then
    "$PY" - "$WORK" "$N_STARTUP" <<'PYEOF' || echo "gpu_check: generating the start-up images failed"
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_throughput import generate_imagenet_like
print(generate_imagenet_like(Path(sys.argv[1]) / "jpeg", int(sys.argv[2])))
PYEOF
fi
run_startup() {  # library architecture
    in_time "job start-up of $1 $2" && [ -f "$WORK/jpeg/imagenet_val.parquet" ] || return 0
    timeout 120 "$PY" benchmarks/bench_job_startup.py --library "$1" --architecture "$2" --device "$DEVICE" \
        --precision "$PRECISION" --manifest "$WORK/jpeg/imagenet_val.parquet" --batch-size "$BATCH_SIZE" \
        --workers "$WORKERS" --tasks 1 3 --workdir "$WORK" --out "$OUT" 2>&1 | tail -4 \
        || echo "gpu_check: job start-up of $1 $2 failed or timed out"
}
run_startup open_clip ViT-B-32
run_startup timm resnet50
stamp "job start-up done"

# The CUDA-only tests: the only tests that are skipped on a CPU machine for want of a GPU.
if in_time "CUDA-only tests"; then
    timeout 120 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_inference.py -k cuda \
        --junitxml "$OUT/gpu_check_tests.xml" 2>&1 | tail -5 || true
fi

"$PY" benchmarks/gpu_check_report.py --out "$OUT" --device "$DEVICE" --command "bash benchmarks/gpu_check.sh (DEVICE=$DEVICE N_IMAGES=$N_IMAGES DATASETS=$DATASETS BATCH_SIZE=$BATCH_SIZE PRECISION=$PRECISION PLAN_GPU=$PLAN_GPU)"
stamp "finished"
