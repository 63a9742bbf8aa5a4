"""Where the logits job's time goes on a GPU node (a command, not a test): what benchmarks/gpu_check.sh cannot split.

    PYTHONPATH=src python benchmarks/gpu_diagnose.py --device cuda --out benchmarks/out [--n-decoded 16384]

1. ``per_core``: one process decoding + transforming JPEGs (PIL, the models' own eval transforms): ImageNet-val-like
   500x375 images and ImageNet-C-like 224x224 ones; the CPU budget of the reference path per loader worker.
2. ``loader``: the pipeline's DataLoaders without a model, by worker count: ``ManifestImageDataset`` over the
   500x375 JPEGs (reference path) and ``DecodedImages`` over a uint8 array (fast path; pinned, copied to the device).
3. ``startup``: a fresh process timed step by step (import torch, CUDA initialisation, import timm / open_clip and the
   package, build ViT-B-32 on the device, first forward).

Writes ``gpu_diagnose.json`` under ``--out`` and prints it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTUP = r"""
import json, sys, time
t = {"start": time.time()}
import torch
t["import_torch"] = time.time()
if sys.argv[1] == "cuda":
    torch.empty(1, device="cuda"); torch.cuda.synchronize()
t["cuda_init"] = time.time()
import open_clip, timm
from clip_robustness.logits.job import cache_group_logits
t["import_libraries"] = time.time()
from clip_robustness.models.build import build_model
model, _, _ = build_model({"model_id": "x", "library": "open_clip", "architecture": "ViT-B-32", "pretrained": "",
                           "weights_file": ""}, sys.argv[1])
t["build_vit_b_32"] = time.time()
with torch.no_grad(), torch.autocast(sys.argv[1], dtype=torch.bfloat16):
    model.encode_image(torch.zeros(256, 3, 224, 224, device=sys.argv[1]))
if sys.argv[1] == "cuda":
    torch.cuda.synchronize()
t["first_forward"] = time.time()
print(json.dumps(t))
"""


def jpegs(n: int, size: tuple[int, int], quality: int, seed: int = 0) -> list[bytes]:
    """``n`` JPEGs of ``size`` (w, h): blocky colour fields plus noise, about the byte size of real photos."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(n):
        base = np.kron(rng.integers(0, 255, (h // 15 + 1, w // 16 + 1, 3)), np.ones((15, 16, 1)))[:h, :w]
        pixels = np.clip(base + rng.normal(0, 14, (h, w, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out


# Longer than 60 lines: a benchmark command's main: its options, the set-up, the timed runs and the report, in the order they run.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--n-jpeg", type=int, default=4096, help="500x375 JPEGs for the reference-path loader")
    parser.add_argument("--n-decoded", type=int, default=16384, help="images in the uint8 array of the fast path")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 7, 15])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args(argv)

    import numpy as np
    import open_clip
    import timm
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader

    from clip_robustness.logits.decoded import DecodedImages, stack_uint8
    from clip_robustness.logits.images import ManifestImageDataset

    torch.set_num_threads(1)
    result: dict = {"device": args.device, "cpu_count": os.cpu_count()}
    if args.device == "cuda":
        result["device_name"] = torch.cuda.get_device_name(0)
    val, c224 = jpegs(200, (500, 375), 90), jpegs(200, (224, 224), 85, seed=1)
    transforms = {
        "timm resnet50": timm.data.create_transform(
            **timm.data.resolve_model_data_config(timm.create_model("resnet50")), is_training=False
        ),
        "open_clip ViT-B-32": open_clip.create_model_and_transforms("ViT-B-32")[2],
    }
    result["per_core"] = {}
    for name, transform in transforms.items():
        for label, data in (("500x375 jpeg", val), ("224x224 jpeg", c224)):
            start = time.perf_counter()
            for blob in data:
                transform(Image.open(io.BytesIO(blob)).convert("RGB"))
            result["per_core"][f"{name}, {label}"] = len(data) / (time.perf_counter() - start)
    print(json.dumps(result["per_core"], indent=1), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        blobs = jpegs(256, (500, 375), 90, seed=2)
        paths = []
        for i in range(args.n_jpeg):
            path = tmp / "jpeg" / f"{i:06d}.JPEG"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(blobs[i % len(blobs)])
            paths.append(path.name)
        array = np.lib.format.open_memmap(
            tmp / "decoded.npy", mode="w+", dtype=np.uint8, shape=(args.n_decoded, 224, 224, 3)
        )
        array[:] = np.random.default_rng(3).integers(0, 255, (1, 224, 224, 3), dtype=np.uint8)
        array.flush()
        del array
        result["loader"] = {}
        pin = args.device == "cuda"
        for workers in args.workers:
            for label, dataset, collate in (
                (
                    "reference (500x375 JPEG, open_clip transform)",
                    ManifestImageDataset(tmp / "jpeg", paths, transforms["open_clip ViT-B-32"]),
                    None,
                ),
                ("decoded (uint8 array, to device)", DecodedImages(tmp / "decoded.npy"), stack_uint8),
            ):
                loader = DataLoader(
                    dataset,
                    batch_size=256,
                    num_workers=workers,
                    pin_memory=pin,
                    collate_fn=collate,
                    prefetch_factor=4 if workers else None,
                )
                start, first, n = time.perf_counter(), None, 0
                for batch in loader:
                    batch = batch[0] if isinstance(batch, (list, tuple)) else batch
                    batch = batch.to(args.device, non_blocking=True)
                    first = first or time.perf_counter()
                    n += len(batch)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                end = time.perf_counter()
                result["loader"][f"{label}, {workers} workers"] = {
                    "images": n,
                    "img_per_s": n / (end - start),
                    "first_batch_s": first - start,
                    "img_per_s_after_first_batch": (n - 256) / (end - first),
                }
                print(label, workers, json.dumps(result["loader"][f"{label}, {workers} workers"]), flush=True)

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    spawned = time.time()
    done = subprocess.run([sys.executable, "-c", STARTUP, args.device], env=env, capture_output=True, text=True)
    if done.returncode == 0:
        stamps = json.loads(done.stdout.strip().splitlines()[-1])
        steps, previous = {"interpreter": stamps["start"] - spawned}, stamps["start"]
        for key in ("import_torch", "cuda_init", "import_libraries", "build_vit_b_32", "first_forward"):
            steps[key], previous = stamps[key] - previous, stamps[key]
        result["startup_s"] = steps
    else:
        result["startup_s"] = {"error": done.stderr[-2000:]}
    print(json.dumps(result["startup_s"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_diagnose.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
