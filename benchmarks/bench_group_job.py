"""One logits group job over K datasets on the decoded path, timed from inside (a command, not a test).

    # CPU, null model (issue 22, goal 2): exposed time per dataset over 12 small datasets
    .venv/bin/python benchmarks/bench_group_job.py --null 64 --datasets 12 --n-images 512 --device cpu --compare-single
    # GPU, study-shaped (benchmarks/gpu_check.sh): three datasets of 32,768 images, one real architecture at bf16
    .venv/bin/python benchmarks/bench_group_job.py --library open_clip --architecture ViT-B-32 --datasets 3 \\
        --n-images 32768 --device cuda --precision bf16 --gpu H100

The datasets are made without JPEGs: a manifest per dataset (fake paths: the decoded path never opens them) and its
decoded array written directly for the model's geometry (noise pixels), with the sidecar the decode job would
write. The job is the pipeline's own :func:`clip_robustness.logits.job.cache_group_logits` (checks, model build,
the overlapped datasets, the background parquet writer), run in this process. Models: ``--null SIZE`` the null
model (``benchmarks/null_model.py``: logits from a fixed projection), or an open_clip / timm architecture with
random weights (zero-shot models get a random head). Reported:

- ``forward``: img/s of the model alone on random batches already on the device (first batch not timed);
- ``end_to_end``: img/s from the first dataset's first batch to the last file written; ``ratio`` to forward;
- ``exposed_per_dataset_s``: (that span - the forward loops' own time) / K: what the datasets' boundaries cost
  (waiting for the next dataset's preparation, the last write);
- with ``--compare-single``: the same job over one dataset of K x N images, and (T_group - T_single) / K, the
  per-dataset cost measured as a difference (both calls whole: checks, build, loops, writes);
- the plan's prediction for this job's compute (:func:`clip_robustness.logits.plan.predicted_logits_seconds`: images
  / forward throughput, from ``config/throughput.tsv`` for ``--gpu`` when it has a row, else from the forward
  measured here) beside the measured span and their ratio.

Writes ``group_job_{model}_{device}.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
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


def model_row(args: argparse.Namespace) -> dict:
    if args.null:
        return {
            "model_id": f"python__null_model.null_{args.null}__bench",
            "library": "python",
            "architecture": f"null_model:null_{args.null}",
            "pretrained": "bench",
            "weights_file": "",
        }
    return {
        "model_id": f"{args.library}__{args.architecture}",
        "library": args.library,
        "architecture": args.architecture,
        "pretrained": "",
        "weights_file": "",
    }


def make_dataset(folder: Path, name: str, n: int, spec, seed: int) -> tuple[Path, Path]:
    """A manifest of ``n`` rows (fake paths, ImageNet labels) and its decoded array for ``spec`` with the decode job's
    sidecar; returns (manifest path, array path). Made once per folder: the pixels (``pixels_{H}x{W}.npy``) are shared
    by every geometry of that size (the array is linked under each key), so four 224-px models read the same files."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clip_robustness.datasets.label_spaces import LabelSpace
    from clip_robustness.datasets.manifest import manifest_hash, read_manifest
    from clip_robustness.logits.decoded import decoded_metadata

    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / f"{name}.manifest.parquet"
    if not manifest_path.exists() or len(read_manifest(manifest_path).table) != n:
        labels = np.arange(n, dtype=np.int16) % 1000
        table = pd.DataFrame(
            {"index": np.arange(n, dtype=np.int32), "path": [f"{name}/{i:08d}.JPEG" for i in range(n)], "label": labels}
        )
        metadata = {
            "dataset": name,
            "root": str(folder),
            "manifest_hash": manifest_hash(table),
            "n_images": n,
            "label_space": json.loads(LabelSpace.imagenet_1k().to_json()),
            "border_crop_px": 0,
        }
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        pq.write_table(arrow.replace_schema_metadata({"clip_robustness": json.dumps(metadata)}), manifest_path)
    h, w = spec.input_size
    pixels = folder / f"pixels_{h}x{w}.npy"
    if not pixels.exists() or np.load(pixels, mmap_mode="r").shape[0] != n:
        rows = np.random.default_rng(seed).integers(0, 256, (16, h, w, 3), dtype=np.uint8)
        array = np.lib.format.open_memmap(pixels, mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
        for lo in range(0, n, 16):
            array[lo : lo + 16] = rows[: min(16, n - lo)]
        array.flush()
        del array
    npy = folder / f"{spec.key}.npy"
    npy.unlink(missing_ok=True)
    npy.symlink_to(pixels.name)
    sidecar = decoded_metadata(spec, read_manifest(manifest_path).metadata, n)
    npy.with_suffix(".json").write_text(json.dumps(sidecar))
    return manifest_path, npy


def run_job(row: dict, tasks: list, head: Path | None, args: argparse.Namespace) -> tuple[float, list[dict], float]:
    """The group job over ``tasks`` (their outputs removed first); (call seconds, timing records, end time)."""
    from clip_robustness.logits.job import cache_group_logits

    for task in tasks:
        task.output.unlink(missing_ok=True)
    timings: list[dict] = []
    start = time.perf_counter()
    cache_group_logits(
        row,
        tasks,
        head_path=head,
        prompt_set="openai" if head else None,
        batch_size=args.batch_size,
        num_workers=0,
        precision_name=args.precision,
        allow_tf32=True,
        device=args.device,
        timings=timings,
    )
    end = time.perf_counter()
    return end - start, timings, end


def summarise(call_s: float, timings: list[dict], end: float) -> dict:
    images = sum(t["n_images"] for t in timings)
    span = end - timings[0]["compute_started"]
    loops = sum(t["inference_s"] for t in timings)
    return {
        "call_s": call_s,
        "span_s": span,
        "forward_loops_s": loops,
        "images": images,
        "end_to_end_img_per_s": images / span,
        "exposed_per_dataset_s": (span - loops) / len(timings),
        "before_first_batch_s": call_s - span,
        "datasets": timings,
    }


# Longer than 60 lines: a benchmark command's main: its options, the set-up, the timed runs and the report, in the order they run.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--null", type=int, choices=[64, 224], help="the null model at this input size")
    who.add_argument("--architecture", help="open_clip / timm architecture (random weights), with --library")
    parser.add_argument("--library", choices=["open_clip", "timm"], default="timm")
    parser.add_argument("--datasets", type=int, default=3)
    parser.add_argument("--n-images", type=int, default=512, help="images per dataset")
    parser.add_argument("--gpu", default="H100", help="throughput-table GPU name for the plan's prediction")
    parser.add_argument("--repeats", type=int, default=3, help="group-job runs (best and median reported)")
    parser.add_argument("--compare-single", action="store_true", help="also one dataset of K x N images")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder for the datasets, kept and reused by later runs (default: a temp folder)",
    )
    add_run_arguments(parser, batch_size=256, forward_batches=10)
    args = parser.parse_args(argv)
    apply_threads(args)

    from clip_robustness.logits.geometry import decode_spec_for_row
    from clip_robustness.logits.job import DatasetTask
    from clip_robustness.logits.plan import predicted_logits_seconds, read_throughput, throughput_for

    row = model_row(args)
    spec = decode_spec_for_row(row)
    result: dict = {
        "command": "benchmarks/bench_group_job.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": row["model_id"],
        "device": args.device,
        "precision": args.precision,
        "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "datasets": args.datasets,
        "n_images": args.n_images,
        "batch_size": args.batch_size,
        "input_size": list(spec.input_size),
        "load_average_1min": [os.getloadavg()[0]],
    }
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        data = args.data or tmp
        head = random_head(row, tmp)
        tasks = []
        for k in range(args.datasets):
            name = f"bench_{k}"
            manifest, npy = make_dataset(data / name, name, args.n_images, spec, seed=k)
            tasks.append(DatasetTask(name, manifest, tmp / "logits" / f"{name}.parquet", npy))
        forward, _ = forward_rate(
            row, head, args.device, args.precision, args.batch_size, args.forward_batches, input_size=spec.input_size
        )
        run_job(row, tasks[:1], head, args)  # warm: imports, first allocations, the arrays in the page cache
        runs = [summarise(*run_job(row, tasks, head, args)) for _ in range(args.repeats)]
        result["load_average_1min"].append(os.getloadavg()[0])
        best = min(runs, key=lambda r: r["span_s"])
        result.update(
            {
                "forward_img_per_s": forward,
                "runs": runs,
                "end_to_end_img_per_s_best": best["end_to_end_img_per_s"],
                "end_to_end_img_per_s_median": statistics.median(r["end_to_end_img_per_s"] for r in runs),
                "ratio_best": best["end_to_end_img_per_s"] / forward,
                "exposed_per_dataset_s_best": min(r["exposed_per_dataset_s"] for r in runs),
                "exposed_per_dataset_s_median": statistics.median(r["exposed_per_dataset_s"] for r in runs),
            }
        )
        if args.compare_single:
            name = "bench_single"
            manifest, npy = make_dataset(data / name, name, args.n_images * args.datasets, spec, seed=99)
            single = [DatasetTask(name, manifest, tmp / "logits" / f"{name}.parquet", npy)]
            run_job(row, single, head, args)  # warm
            group_calls = [r["call_s"] for r in runs]
            single_calls = [run_job(row, single, head, args)[0] for _ in range(args.repeats)]
            result["single_dataset_call_s"] = single_calls
            result["difference_per_dataset_s_median"] = (
                statistics.median(group_calls) - statistics.median(single_calls)
            ) / args.datasets
            result["difference_per_dataset_s_best"] = (min(group_calls) - min(single_calls)) / args.datasets

    table = read_throughput(REPO / "config" / "throughput.tsv")
    on_gpu = args.device == "cuda" and not args.null  # the table holds GPU rows: a CPU run is predicted from itself
    found = throughput_for(table, args.gpu, row["library"], row["architecture"], args.precision) if on_gpu else None
    rate, source = (found[0], f"config/throughput.tsv, {args.gpu} {found[1]}") if found else (forward, "measured here")
    predicted = predicted_logits_seconds(best["images"], rate, jobs=0, job_startup_s=0.0)
    result["plan"] = {
        "images_per_s": rate,
        "source": source,
        "predicted_compute_s": predicted,
        "measured_span_s": best["span_s"],
        "measured_over_predicted": best["span_s"] / predicted,
    }
    result["load_average_1min"].append(os.getloadavg()[0])

    print(
        f"{row['model_id']} on {args.device} ({result['device_name']}), {args.datasets} datasets x "
        f"{args.n_images} images, batch {args.batch_size}, {spec.input_size[0]} px, {args.precision}"
    )
    print(
        f"  forward {forward:,.0f} img/s; end to end {result['end_to_end_img_per_s_best']:,.0f} img/s best, "
        f"{result['end_to_end_img_per_s_median']:,.0f} median (ratio {result['ratio_best']:.2f})"
    )
    print(
        f"  exposed per dataset {result['exposed_per_dataset_s_best']:.4f} s best, "
        f"{result['exposed_per_dataset_s_median']:.4f} s median"
    )
    if args.compare_single:
        print(
            f"  group minus one dataset of {args.datasets * args.n_images} images, per dataset: "
            f"{result['difference_per_dataset_s_best']:.4f} s best, {result['difference_per_dataset_s_median']:.4f} s "
            "median"
        )
    plan = result["plan"]
    print(
        f"  plan: {plan['predicted_compute_s']:.2f} s predicted ({plan['images_per_s']:,.0f} img/s, {plan['source']}), "
        f"{plan['measured_span_s']:.2f} s measured, ratio {plan['measured_over_predicted']:.2f}"
    )
    print(f"  load average {result['load_average_1min']}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"group_job_{row['model_id']}_{args.device}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
