#!/usr/bin/env bash
# One short device session (<= 8 minutes on one GPU): the logits cache's GPU throughput and the CUDA-only tests.
#
#     bash benchmarks/gpu_check.sh            # from the repository root, on a GPU node, with the project's .venv
#
# 1. benchmarks/bench_throughput.py (pure forward vs end-to-end cache, reference and decoded fast path, their ratio
#    to forward) at bf16 for open_clip ViT-B-32, RN50, ViT-B-16 and timm resnet50, random weights (offline), on one
#    set of generated ImageNet-like JPEGs (500x375) shared by the four models;
# 2. benchmarks/bench_job_startup.py for open_clip ViT-B-32 and timm resnet50: the fixed cost of one logits group job
#    (fresh process: interpreter, imports, CUDA start-up, model build, weight load from a local file) over 1 and 5
#    datasets of the same images, i.e. wall time minus the job's own forward + write time;
# 3. the CUDA-only tests (the tests marked by their `cuda` skip condition, which are skipped on CPU machines);
# 4. one JSON (benchmarks/out/gpu_check.json) and one markdown table (benchmarks/out/gpu_check.md) of all three.
# Knobs (environment): N_IMAGES (default 4096), BATCH_SIZE (256), WORKERS (CPU cores - 1), PRECISION (bf16).
# Record the table in docs/performance.md ("GPU check"). The goal: decoded (decode excluded) >= 0.8x forward up to
# ViT-B-16 speed, with decoding outside the GPU job.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-benchmarks/out}
N_IMAGES=${N_IMAGES:-4096}
BATCH_SIZE=${BATCH_SIZE:-256}
WORKERS=${WORKERS:-$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))}
PRECISION=${PRECISION:-bf16}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu N_IMAGES=32: a smoke run of this script on a CPU machine (no GPU numbers)
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ "$DEVICE" = cuda ]; then
    "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh: no CUDA device visible")'
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu_check_device.txt" || true

# The images once (CPU), then each model reads their manifest.
"$PY" - "$WORK" "$N_IMAGES" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_throughput import generate_imagenet_like
print(generate_imagenet_like(Path(sys.argv[1]) / "data", int(sys.argv[2])))
PYEOF
MANIFEST="$WORK/data/imagenet_val.parquet"

run_model() {  # library architecture
    timeout 150 "$PY" benchmarks/bench_throughput.py --library "$1" --architecture "$2" --device "$DEVICE" \
        --precision "$PRECISION" --manifest "$MANIFEST" --batch-size "$BATCH_SIZE" --workers "$WORKERS" \
        --forward-batches 20 --workdir "$WORK" --out "$OUT" 2>&1 | tail -12 || echo "gpu_check: $1 $2 failed or timed out"
}
run_model open_clip ViT-B-32
run_model timm resnet50
run_model open_clip RN50
run_model open_clip ViT-B-16

run_startup() {  # library architecture
    timeout 150 "$PY" benchmarks/bench_job_startup.py --library "$1" --architecture "$2" --device "$DEVICE" \
        --precision "$PRECISION" --manifest "$MANIFEST" --batch-size "$BATCH_SIZE" --workers "$WORKERS" \
        --tasks 1 5 --workdir "$WORK" --out "$OUT" 2>&1 | tail -6 || echo "gpu_check: job start-up of $1 $2 failed or timed out"
}
run_startup open_clip ViT-B-32
run_startup timm resnet50

# The CUDA-only tests: the only tests that are skipped on a CPU machine for want of a GPU.
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_inference.py -k cuda \
    --junitxml "$OUT/gpu_check_tests.xml" 2>&1 | tail -15 || true

"$PY" benchmarks/gpu_check_report.py --out "$OUT" --device "$DEVICE" --command "bash benchmarks/gpu_check.sh (DEVICE=$DEVICE N_IMAGES=$N_IMAGES BATCH_SIZE=$BATCH_SIZE WORKERS=$WORKERS PRECISION=$PRECISION)"
