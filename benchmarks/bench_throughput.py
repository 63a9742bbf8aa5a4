"""Throughput of the logits cache (a command, not a test): forward alone, reference path, decoded fast path.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_throughput.py --model openclip__ViT-B-32__laion2b_s34b_b79k \\
        --device cpu --n-images 256 [--manifest data/manifests/imagenet_val.parquet] [--batch-size 64] [--workers 1]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_throughput.py --library timm --architecture resnet50 --device cuda

The model is built by the real open_clip / timm constructor with random weights (zero-shot CLIP models get a
random unit-norm 1000-class head, so no text tower runs). The dataset is a manifest, or N generated ImageNet-like
JPEGs (500x375, noisy, ~80-130 KB) in the real ImageNet val layout (``ILSVRC2012_val_XXXXXXXX.JPEG``, labels
from imagenet-x), listed by the pipeline's own manifest builder. Measured, in images per second:

- ``forward``: the model on synthetic float tensors already on the device (the ceiling);
- ``reference``: the cache job with JPEG decoding in the job (read, decode, preprocess, forward, write);
- ``decoded (decode excluded)``: the cache job streaming the decoded uint8 array (fast path, the array exists);
- ``decode``: building that array (``decode_images``, CPU workers), and ``decoded (decode included)``: both,
  i.e. the fast path when the array serves a single model.

Each end-to-end figure excludes model building (reported separately). Prints a table and writes JSON to
``benchmarks/out/throughput_{model}_{device}.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_common import add_run_arguments, apply_threads, forward_rate, random_head  # noqa: E402


def generate_imagenet_like(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` noisy 500x375 JPEGs named like ImageNet val files in ``folder``; returns the manifest path."""
    from PIL import Image

    from clip_robustness.datasets.manifest import build_manifest, imagenet_val_labels, write_manifest
    from clip_robustness.datasets.registry import load_dataset_registry
    from clip_robustness.demo.generate import demo_classes, render_image

    images = folder / "val"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = sorted(imagenet_val_labels())[:n]
    classes = demo_classes()
    for i, name in enumerate(names):
        base = render_image(classes[i % len(classes)], rng, classes=classes, domain="clean").resize(
            (500, 375), Image.BICUBIC
        )
        pixels = np.asarray(base, dtype=np.int16) + rng.normal(0, 12, (375, 500, 3)).astype(np.int16)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images / name, quality=90)
    entry = load_dataset_registry(REPO / "config" / "datasets.yaml").resolve("imagenet_val")
    build = build_manifest(entry, images, check_images=False)
    path = folder / "imagenet_val.parquet"
    write_manifest(build, path, folder / "imagenet_val.skipped.csv")
    return path


def model_row(args: argparse.Namespace) -> dict:
    """The registry row of ``--model`` (random weights: pretrained tag and weights file dropped), or one from
    ``--library``/``--architecture``."""
    if args.model:
        from clip_robustness.models.registry import load_model_registry

        row = dict(load_model_registry(args.registry).row(args.model))
    else:
        row = {
            "model_id": f"{args.library}__{args.architecture}",
            "library": args.library,
            "architecture": args.architecture,
        }
    return {**row, "pretrained": "", "weights_file": ""}


# Longer than 60 lines: a benchmark command's main: its options, the set-up, the timed runs and the report, in the order they run.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="model id from the registry (random weights are used)")
    who.add_argument("--architecture", help="library architecture name, with --library")
    parser.add_argument("--library", choices=["open_clip", "timm"], default="timm")
    parser.add_argument("--registry", default=str(REPO / "config" / "models.tsv"))
    parser.add_argument("--manifest", type=Path, help="an existing manifest (default: generate --n-images images)")
    parser.add_argument("--n-images", type=int, default=256, help="images to generate when no --manifest (default 256)")
    parser.add_argument(
        "--workers", type=int, default=max((os.cpu_count() or 2) - 1, 1), help="loader/decoder processes"
    )
    add_run_arguments(parser, batch_size=64, forward_batches=5)
    args = parser.parse_args(argv)
    apply_threads(args)

    from clip_robustness.datasets.manifest import read_manifest
    from clip_robustness.logits.cache import read_logits
    from clip_robustness.logits.decoded import decode_dataset
    from clip_robustness.logits.geometry import decode_spec_for_row
    from clip_robustness.logits.loop import cache_dataset_logits

    row = model_row(args)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        manifest_path = args.manifest or generate_imagenet_like(tmp / "data", args.n_images)
        generate_s = time.perf_counter() - start if args.manifest is None else 0.0
        manifest = read_manifest(manifest_path)
        n = len(manifest.table)
        head_path = random_head(row, tmp)
        forward, build_s = forward_rate(
            row, head_path, args.device, args.precision, args.batch_size, args.forward_batches
        )
        common = dict(
            head_path=head_path,
            prompt_set="openai" if head_path else None,
            batch_size=args.batch_size,
            num_workers=args.workers,
            precision_name=args.precision,
            allow_tf32=True,
            device=args.device,
        )

        torch.manual_seed(0)  # the same random weights in every build
        start = time.perf_counter()
        cache_dataset_logits(row, manifest, tmp / "reference.parquet", **common)
        reference_s = time.perf_counter() - start - build_s

        spec = decode_spec_for_row(row)
        npy = tmp / "decoded" / f"{spec.key}.npy"
        start = time.perf_counter()
        decode_dataset(manifest, spec, npy, npy.with_suffix(".json"), batch_size=64, num_workers=args.workers)
        decode_s = time.perf_counter() - start

        torch.manual_seed(0)
        start = time.perf_counter()
        cache_dataset_logits(row, manifest, tmp / "decoded.parquet", decoded=npy, **common)
        decoded_s = time.perf_counter() - start - build_s

        reference, fast = read_logits(tmp / "reference.parquet"), read_logits(tmp / "decoded.parquet")
        agreement = float(np.mean(reference.logits.argmax(1) == fast.logits.argmax(1)))
        max_abs = float(np.max(np.abs(reference.logits - fast.logits)))
        jpeg_kb = statistics.mean((manifest.root / p).stat().st_size for p in manifest.table["path"][:200]) / 1024
        decoded_gib = npy.stat().st_size / 2**30

    rates = {
        "forward": forward,
        "reference": n / reference_s,
        "decoded (decode excluded)": n / decoded_s,
        "decode only": n / decode_s,
        "decoded (decode included)": n / (decode_s + decoded_s),
    }
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    result = {
        "model": row["model_id"],
        "library": row["library"],
        "architecture": row["architecture"],
        "device": args.device,
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
        "n_images": n,
        "mean_jpeg_kb": jpeg_kb,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "precision": args.precision if args.device == "cuda" else "fp32",
        "preprocessing_key": spec.key,
        "decoded_gib": decoded_gib,
        "model_build_s": build_s,
        "generate_s": generate_s,
        "images_per_s": rates,
        "ratio_to_forward": {k: v / forward for k, v in rates.items() if k != "forward"},
        "top1_agreement_fast_vs_reference": agreement,
        "max_abs_logit_diff_fast_vs_reference": max_abs,
        "command": "benchmarks/bench_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(
        f"{row['model_id']} on {args.device} ({device_name}), {n} images ({jpeg_kb:.0f} KB JPEGs), batch "
        f"{args.batch_size}, {args.workers} workers, key {spec.key}"
    )
    print(f"{'path':28s} {'img/s':>10s} {'x forward':>10s}")
    for name, rate in rates.items():
        print(f"{name:28s} {rate:10.1f} {rate / forward:10.2f}")
    print(f"fast vs reference: top-1 agreement {agreement:.4f}, max |logit diff| {max_abs:.2e}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"throughput_{row['model_id']}_{args.device}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
