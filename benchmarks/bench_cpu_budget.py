"""The logits job's CPU work per image, by step (a command, not a test): the budget of docs/performance.md.

    .venv/bin/python benchmarks/bench_cpu_budget.py [--size 224] [--n-images 4096] [--batch-size 256] [--repeats 5]

No model runs: each step of the decoded path is timed on its own with the pipeline's own code, on real shapes
(``--size`` px uint8 batches, 1000 float32 logits per image), in CPU seconds of this process (``time.process_time``:
every thread counted) per image:

- ``read``: the array read by the job's loader (:func:`clip_robustness.logits.loop.batch_source`: one positioned read
  per batch, read-ahead threads, reused buffers), from the page cache;
- ``host_copy``: on CPU the copy a pinned staging buffer would take (``Tensor.copy_`` into a reused buffer). On a GPU
  node the loader reads straight into pinned memory and the device copy is DMA, so this is an upper bound;
- ``gather``: the logits of each batch written into the job's result array (:class:`~clip_robustness.logits.loop.LogitsGather`);
- ``parquet_write``: the cache file written as the job writes it (:func:`clip_robustness.logits.cache.write_logits`:
  zstd, byte-stream-split floats), for logits drawn like a real model's (normal, scale 3).

Reports each step's best and median over ``--repeats``, the sum of the job's steps (:data:`JOB_STEPS`; with
``host_copy`` beside it), and that sum against the budget: on a GPU node of
``--node-cores`` cores, the sum divided by the cores must stay under ``--share`` of the forward time per image
(``--forward-us``; default ViT-B-32 on an H100 at bf16 from ``config/throughput.tsv``, 22,300 img/s -> 45 us). Writes ``cpu_budget.json`` under ``--out``.
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

#: The steps the job's CPU does on a GPU node: the read fills pinned memory, and the device copies it by DMA, so
#: ``host_copy`` (the pinned copy's stand-in) is not one of them.
JOB_STEPS = ("read", "gather", "parquet_write")


def cpu_us_per_image(step, images: int, repeats: int) -> list[float]:
    """CPU microseconds per image of ``step()`` (all threads of this process), once per repeat."""
    out = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        out.append((time.process_time() - start) * 1e6 / images)
    return out


# Longer than 60 lines: a benchmark command's main: its options, the set-up, the timed runs and the report, in the order they run.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n-images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--node-cores", type=int, default=16)
    parser.add_argument("--share", type=float, default=0.10)
    parser.add_argument(
        "--forward-us",
        type=float,
        default=None,
        help="forward time per image, us (default: ViT-B-32 on an H100 at bf16, config/throughput.tsv)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args(argv)

    from bench_loader import write_array

    from clip_robustness.logits.cache import write_logits
    from clip_robustness.logits.decoded import DecodedImages
    from clip_robustness.logits.loop import LogitsGather, batch_source
    from clip_robustness.logits.plan import read_throughput, throughput_for

    if args.forward_us is None:
        rate, _ = throughput_for(
            read_throughput(REPO / "config" / "throughput.tsv"), "H100", "open_clip", "ViT-B-32", "bf16"
        )
        args.forward_us = 1e6 / rate
    n, b = args.n_images, args.batch_size
    loads = [os.getloadavg()[0]]
    steps: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        path = write_array(tmp / "decoded.npy", n, args.size)
        source = batch_source(DecodedImages(path), 0, "cpu")

        def read() -> None:
            for _ in source.open(0, b):
                pass

        read()  # warm: page cache, the loader's buffers
        steps["read"] = cpu_us_per_image(read, n, args.repeats)

        batch = DecodedImages(path).read_rows(0, b)
        staging = torch.empty_like(batch)

        def host_copy() -> None:
            for _ in range(0, n, b):
                staging.copy_(batch)

        host_copy()
        steps["host_copy"] = cpu_us_per_image(host_copy, n, args.repeats)

        logits = torch.from_numpy(np.random.default_rng(1).normal(0, 3, (b, 1000)).astype(np.float32))

        def gather() -> None:
            into = LogitsGather(n, torch.device("cpu"))
            for lo in range(0, n, b):
                into.add(lo, logits[: min(b, n - lo)])
            into.flush()

        gather()
        steps["gather"] = cpu_us_per_image(gather, n, args.repeats)

        all_logits = np.random.default_rng(2).normal(0, 3, (n, 1000)).astype(np.float32)
        index, labels = np.arange(n, dtype=np.int32), (np.arange(n) % 1000).astype(np.int16)

        def parquet_write() -> None:
            write_logits(tmp / "logits.parquet", index, labels, all_logits, {"benchmark": True})

        parquet_write()
        steps["parquet_write"] = cpu_us_per_image(parquet_write, n, args.repeats)
        file_mb = (tmp / "logits.parquet").stat().st_size / 1e6
    loads.append(os.getloadavg()[0])

    best = {k: min(v) for k, v in steps.items()}
    median = {k: statistics.median(v) for k, v in steps.items()}
    budget_us = args.share * args.forward_us
    result = {
        "command": "benchmarks/bench_cpu_budget.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": args.size,
        "n_images": n,
        "batch_size": b,
        "cpu_count": os.cpu_count(),
        "cpu_us_per_image": steps,
        "best": best,
        "median": median,
        "job_steps": list(JOB_STEPS),
        "sum_best_us": sum(best[k] for k in JOB_STEPS),
        "sum_median_us": sum(median[k] for k in JOB_STEPS),
        "sum_with_host_copy_best_us": sum(best.values()),
        "sum_with_host_copy_median_us": sum(median.values()),
        "node_cores": args.node_cores,
        "forward_us": args.forward_us,
        "share": args.share,
        "budget_us": budget_us,
        "per_core_best_us": sum(best[k] for k in JOB_STEPS) / args.node_cores,
        "per_core_median_us": sum(median[k] for k in JOB_STEPS) / args.node_cores,
        "parquet_mb_per_1000_images": file_mb * 1000 / n,
        "load_average_1min": loads,
    }
    print(f"CPU work per image ({args.size} px, batch {b}, {n} images; load {loads[0]:.2f}-{loads[-1]:.2f}), CPU us:")
    for k in steps:
        print(f"  {k:14s} {best[k]:8.2f} best {median[k]:8.2f} median")
    print(
        f"  {'sum of the job':14s} {result['sum_best_us']:8.2f} best {result['sum_median_us']:8.2f} median "
        f"({', '.join(JOB_STEPS)}; with host_copy {result['sum_with_host_copy_best_us']:.2f} best)"
    )
    print(
        f"  / {args.node_cores} cores: {result['per_core_best_us']:.2f} us best, {result['per_core_median_us']:.2f} us "
        f"median, against the budget {budget_us:.2f} us ({args.share:.0%} of {args.forward_us:.1f} us)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "cpu_budget.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
