"""The decoded-array loader alone, no model (a command, not a test): images per second from the page cache.

    .venv/bin/python benchmarks/bench_loader.py [--sizes 224 384 600] [--mb 600] [--batch-size 256] [--repeats 7]

For each input size a ``[n, size, size, 3]`` uint8 array of about ``--mb`` MB is written to a temp folder and read
once (so it is in the page cache, and the loader's host buffers exist, as in a long dataset), then streamed
``--repeats`` times by the logits job's own loader
(:func:`clip_robustness.logits.loop.batch_source` over :class:`~clip_robustness.logits.decoded.DecodedImages`:
whole batches, each one positioned read, by the read-ahead threads, into reused host buffers on CPU and pinned ones on
CUDA) from one process. For comparison, the loader before issue 22 (each batch a memory-map slice copied into fresh
memory) runs too. Reports the best and the median of the repeats, with the load average (``os.getloadavg``) around each; writes
``loader_{device}.json`` under ``--out``.
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


def write_array(path: Path, n: int, size: int) -> Path:
    """A ``[n, size, size, 3]`` uint8 ``.npy`` of noise (one random row repeated: content does not matter to a read)."""
    row = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    for i in range(n):
        array[i] = row
    array.flush()
    del array
    return path


class Pipeline:
    """The logits job's loader over one array, opened once per repeat: like one long dataset, whose host buffers (the
    CPU's ring, CUDA's cached pinned blocks) are allocated once and reused."""

    def __init__(self, path: Path, device: str):
        from clip_robustness.logits.decoded import DecodedImages
        from clip_robustness.logits.loop import DeviceFeed, batch_source

        self.source = batch_source(DecodedImages(path), 0, device)
        self.feed = DeviceFeed(device)
        self.device = device

    def __call__(self, path: Path, batch_size: int, device: str) -> int:
        """Images streamed (host batches; on CUDA also copied to the device)."""
        n = 0
        for batch in self.source.open(0, batch_size):
            self.feed.take(self.feed.put(batch))
            n += len(batch)
        if self.device == "cuda":
            torch.cuda.synchronize()
        return n


def stream_before(path: Path, batch_size: int, device: str) -> int:
    """The loader before issue 22 without a device: each batch a memory-map slice copied into fresh memory (what
    ``DecodedImages.__getitems__`` did; on CUDA the DataLoader then copied it again into pinned memory)."""
    array = np.load(path, mmap_mode="r")
    n = 0
    for lo in range(0, len(array), batch_size):
        batch = torch.from_numpy(np.array(array[lo : lo + batch_size]))
        n += len(batch)
    return n


def measure(stream, path: Path, batch_size: int, device: str, repeats: int) -> dict:
    rates, loads = [], []
    for _ in range(repeats):
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        n = stream(path, batch_size, device)
        rates.append(n / (time.perf_counter() - start))
        loads.append([load_before, os.getloadavg()[0]])
    return {
        "images": n,
        "img_per_s": rates,
        "best": max(rates),
        "median": statistics.median(rates),
        "load_average_1min": loads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 384, 600])
    parser.add_argument("--mb", type=float, default=600.0, help="size of each array, MB (it must fit the page cache)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--baseline-repeats", type=int, default=3, help="repeats of the loader before (0: skip)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = parser.parse_args(argv)

    result = {
        "command": "benchmarks/bench_loader.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": args.device,
        "cpu_count": os.cpu_count(),
        "batch_size": args.batch_size,
        "sizes": {},
    }
    print(
        f"{'size':>5s} {'images':>7s} {'MB/batch':>8s} {'best img/s':>11s} {'median':>9s} {'GB/s best':>9s} "
        f"{'before (best)':>16s} {'load':>10s}"
    )
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for size in args.sizes:
            row_bytes = size * size * 3
            n = max(args.batch_size, int(args.mb * 1e6 // row_bytes))
            path = write_array(Path(tmp) / f"{size}.npy", n, size)
            stream = Pipeline(path, args.device)
            stream(path, args.batch_size, args.device)  # warm: the whole array in the page cache, the buffers made
            pipeline = measure(stream, path, args.batch_size, args.device, args.repeats)
            record = {
                "images": n,
                "row_bytes": row_bytes,
                "pipeline": pipeline,
                "gb_per_s_best": pipeline["best"] * row_bytes / 1e9,
            }
            if args.baseline_repeats:
                record["before"] = measure(stream_before, path, args.batch_size, args.device, args.baseline_repeats)
            result["sizes"][str(size)] = record
            path.unlink()
            loads = [x for pair in pipeline["load_average_1min"] for x in pair]
            before = record.get("before", {}).get("best", float("nan"))
            print(
                f"{size:5d} {n:7d} {args.batch_size * row_bytes / 1e6:8.1f} {pipeline['best']:11,.0f} "
                f"{pipeline['median']:9,.0f} {record['gb_per_s_best']:9.2f} {before:16,.0f} "
                f"{min(loads):4.2f}-{max(loads):4.2f}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"loader_{args.device}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
