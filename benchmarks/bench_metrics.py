"""Benchmark of the metric stage on synthetic ImageNet-scale logits (a command, not a test).

    .venv/bin/python benchmarks/bench_metrics.py [--n 50000] [--repeats 3] [--workdir DIR]

Writes a synthetic 50k x 1000 float32 logits cache in the real format (``write_logits``), then times:
reading it, each metric function on it, and the whole per-model table (ID set + one test condition
+ one OOD set, as ``model_metrics_table`` computes it). Prints one row per step: best and median
wall time over the repeats. The ImageNet val file names are the real 50k (imagenet-x wheel), so the
ImageNet-X join is exercised at full size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


# Longer than 60 lines: a benchmark command's main: its options, the set-up, the timed runs and the report, in the order they run.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=50_000, help="images in the ID set (default 50000; at most 50000 real file names)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per step (default 3)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="folder for the synthetic cache file (default: a temp dir)"
    )
    args = parser.parse_args(argv)

    import imagenet_x

    from clip_robustness.datasets.label_spaces import LabelSpace
    from clip_robustness.logits.cache import read_logits, write_logits
    from clip_robustness.metrics.calibration import (
        calibration_split,
        expected_calibration_error,
        fit_temperature,
        predict,
    )
    from clip_robustness.metrics.imagenet_x import error_ratios, factor_accuracies, load_imagenet_x_annotations
    from clip_robustness.metrics.model_rows import DatasetLogits, model_metrics_table
    from clip_robustness.metrics.ood import auroc, fpr_at_tpr, ood_scores
    from clip_robustness.metrics.tidy import MetricSettings

    val = pd.read_csv(imagenet_x.utils.get_annotation_path() / "filename_label.csv").head(args.n)
    n = len(val)
    labels = val["label"].to_numpy()
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, 1000), dtype=np.float32) * 2
    logits[np.arange(n), labels] += rng.uniform(0, 10, n).astype(np.float32)
    file_names = val["file_name"].to_numpy()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "bench.parquet"
        start = time.perf_counter()
        write_logits(path, np.arange(n), labels, logits, {"model_id": "bench", "logit_scale": 100.0})
        print(
            f"wrote {n} x 1000 synthetic logits ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.2f} s"
        )
        rows: list[tuple[str, float, float]] = []
        rows.append(("read_logits (whole parquet)", *_time(lambda: read_logits(path), args.repeats)))

    annotations = load_imagenet_x_annotations()
    settings = MetricSettings()
    split = calibration_split(file_names, 0)
    full = predict(logits, labels)
    id_scores = ood_scores(logits, 100.0)
    ood_logits = logits[: n // 5] - 1.0
    ood = ood_scores(ood_logits, 100.0)
    subset = LabelSpace("imagenet_r", np.arange(0, 1000, 5))
    subset_labels = subset.class_indices[labels % 200]

    steps: list[tuple[str, Callable[[], object]]] = [
        ("load ImageNet-X annotations", load_imagenet_x_annotations),
        ("predict (top1, confidence, nll; 1000 classes)", lambda: predict(logits, labels)),
        ("predict on a 200-class subset", lambda: predict(logits, subset_labels, subset)),
        ("expected_calibration_error", lambda: expected_calibration_error(full.confidence, full.correct, 15)),
        ("calibration_split", lambda: calibration_split(file_names, 0)),
        ("fit_temperature (calibration half)", lambda: fit_temperature(logits[split], labels[split])),
        ("ood_scores (msp, mcm, max_logit)", lambda: ood_scores(logits, 100.0)),
        ("auroc (msp, ID vs OOD)", lambda: auroc(id_scores["msp"], ood["msp"])),
        ("fpr_at_tpr (msp)", lambda: fpr_at_tpr(id_scores["msp"], ood["msp"])),
        (
            "ImageNet-X factor accuracies + error ratios",
            lambda: error_ratios(factor_accuracies(file_names, logits.argmax(1), annotations)["accuracy"]),
        ),
        (
            "model_metrics_table (ID + 1 test cond. + 1 OOD)",
            lambda: model_metrics_table(
                "bench",
                DatasetLogits("imagenet_val", logits, labels, None, file_names, 100.0),
                [DatasetLogits("imagenet_r", logits, subset_labels, subset)],
                [DatasetLogits("sun", ood_logits, -np.ones(len(ood_logits), dtype=np.int64), None, None, 100.0)],
                settings,
                zero_shot=True,
                annotations=annotations,
            ),
        ),
    ]
    for name, fn in steps:
        rows.append((name, *_time(fn, args.repeats)))

    width = max(len(name) for name, *_ in rows)
    print(f"\n{'step'.ljust(width)}  {'best s':>8}  {'median s':>8}   (n={n}, repeats={args.repeats})")
    for name, best, median in rows:
        print(f"{name.ljust(width)}  {best:8.3f}  {median:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
