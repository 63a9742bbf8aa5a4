"""Fixed cost of one logits group job, measured in a fresh process (a command, not a test).

    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_job_startup.py --library open_clip \\
        --architecture ViT-B-32 --device cuda --manifest M.parquet --tasks 1 5 [--batch-size 256] [--workers 7]

What a ``cache_logits`` job pays besides its forward passes: the interpreter, the torch / timm / open_clip
imports, CUDA start-up, the model build and its weight load, the checks of its inputs. The parent process
decodes the manifest's images once (the fast path's array), saves a random-init model of the architecture as a
local weights file (so the weight load is real: the registry's ``weights_file`` path) and, for random
zero-shot models, a random head; then for each ``--tasks K`` it starts a fresh Python process that runs the
pipeline's own group job (:func:`clip_robustness.logits.job.cache_group_logits`) over K datasets (the same
images K times, K output files), timed from before the process is spawned to its exit. The job's own records
give its compute (forward loop + parquet write per dataset); the rest is the fixed cost:

    fixed_s = wall_s - sum(inference_s + write_s)

Writes ``job_startup_{library}__{architecture}_{device}.json`` under ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(spec_path: Path) -> int:
    """The job process: run the group job described by ``spec_path`` and record its timings next to it."""
    started = time.time()
    import torch

    from clip_robustness.logits.job import cache_group_logits, tasks_from_lists

    imported = time.time()
    spec = json.loads(spec_path.read_text())
    timings: list[dict] = []
    if spec["device"] == "cpu":
        torch.set_num_threads(spec["threads"])
    cache_group_logits(
        spec["row"],
        tasks_from_lists(spec["datasets"], spec["manifests"], spec["outputs"], spec["decoded"]),
        head_path=spec["head"],
        weights_path=spec["row"]["weights_file"],
        prompt_set=spec["prompt_set"],
        batch_size=spec["batch_size"],
        num_workers=spec["workers"],
        precision_name=spec["precision"],
        allow_tf32=True,
        device=spec["device"],
        timings=timings,
    )
    spec_path.with_suffix(".timings.json").write_text(
        json.dumps({"started": started, "imported": imported, "finished": time.time(), "datasets": timings})
    )
    return 0


def save_random_weights(row: dict, folder: Path) -> Path:
    """A random-init model of ``row``'s architecture saved as a local weights file (the format each library's loader
    reads: open_clip a state-dict checkpoint, timm safetensors)."""
    import torch

    from clip_robustness.models.build import build_model

    torch.manual_seed(0)
    model, _, _ = build_model({**row, "pretrained": "", "weights_file": ""}, "cpu")
    if row["library"] == "open_clip":
        path = folder / "weights.pt"
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file

        path = folder / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# Longer than 60 lines: a benchmark command's main: its options, the set-up, the timed runs and the report, in the order they run.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--library", choices=["open_clip", "timm"], default="timm")
    parser.add_argument("--architecture", default="resnet50")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--manifest", type=Path, help="an existing manifest (default: generate --n-images images)")
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 5], help="datasets per job, one job per value")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=max((os.cpu_count() or 2) - 1, 1))
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of the job (CPU device)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_common import random_head
    from bench_throughput import generate_imagenet_like

    from clip_robustness.datasets.manifest import read_manifest
    from clip_robustness.logits.decoded import decode_dataset
    from clip_robustness.logits.geometry import decode_spec_for_row

    row = {
        "model_id": f"{args.library}__{args.architecture}",
        "library": args.library,
        "architecture": args.architecture,
        "pretrained": "",
        "weights_file": "",
    }
    records = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        manifest_path = args.manifest or generate_imagenet_like(tmp / "data", args.n_images)
        manifest = read_manifest(manifest_path)
        spec = decode_spec_for_row(row)
        npy = tmp / "decoded" / f"{spec.key}.npy"
        decode_dataset(manifest, spec, npy, npy.with_suffix(".json"), batch_size=64, num_workers=args.workers)
        head = random_head(row, tmp)
        weights = save_random_weights(row, tmp)
        weights_mb = weights.stat().st_size / 2**20
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        for k in args.tasks:
            job = tmp / f"job{k}"
            job.mkdir()
            dataset = str(manifest.metadata["dataset"])
            spec_path = job / "spec.json"
            spec_path.write_text(
                json.dumps(
                    {
                        "row": {**row, "weights_file": str(weights)},
                        "datasets": [dataset] * k,
                        "manifests": [str(manifest_path)] * k,
                        "outputs": [str(job / f"{i}.parquet") for i in range(k)],
                        "decoded": [str(npy)] * k,
                        "head": None if head is None else str(head),
                        "prompt_set": "openai" if head else None,
                        "batch_size": args.batch_size,
                        "workers": args.workers,
                        "precision": args.precision,
                        "device": args.device,
                        "threads": args.threads,
                    }
                )
            )
            spawned = time.time()
            done = subprocess.run([sys.executable, __file__, "--child", str(spec_path)], env=env, check=False)
            wall = time.time() - spawned
            if done.returncode != 0:
                raise SystemExit(f"the job process for {k} dataset(s) exited with {done.returncode}")
            t = json.loads(spec_path.with_suffix(".timings.json").read_text())
            compute = sum(d["inference_s"] + d["write_s"] for d in t["datasets"])
            if len(t["datasets"]) != k:
                raise SystemExit(f"the job computed {len(t['datasets'])} of its {k} datasets")
            records.append(
                {
                    "datasets": k,
                    "images": k * len(manifest.table),
                    "wall_s": wall,
                    "compute_s": compute,
                    "fixed_s": wall - compute,
                    "interpreter_s": t["started"] - spawned,
                    "imports_s": t["imported"] - t["started"],
                    "job_s": t["finished"] - t["imported"],
                    "images_per_s_compute": k * len(manifest.table) / compute,
                }
            )
    import torch

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    result = {
        "model": row["model_id"],
        "library": args.library,
        "architecture": args.architecture,
        "device": args.device,
        "device_name": device_name,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "weights_mb": weights_mb,
        "jobs": records,
        "command": "benchmarks/bench_job_startup.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(f"{row['model_id']} on {args.device} ({device_name}), weights {weights_mb:.0f} MB")
    print(
        f"{'datasets':>8s} {'images':>7s} {'wall s':>7s} {'compute s':>9s} {'fixed s':>7s} {'interp':>6s} "
        f"{'imports':>7s}"
    )
    for r in records:
        print(
            f"{r['datasets']:8d} {r['images']:7d} {r['wall_s']:7.2f} {r['compute_s']:9.2f} {r['fixed_s']:7.2f} "
            f"{r['interpreter_s']:6.2f} {r['imports_s']:7.2f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"job_startup_{row['model_id']}_{args.device}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
