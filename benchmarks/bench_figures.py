"""Benchmark: render every figure (PNG + PDF) and table for a synthetic full-scale study.

210 models (51 zero-shot CLIP, 32 CLIP-FT, 87 standard, 40 more data) x every dataset of config.yaml
(ImageNet val, 7 test conditions, 75 ImageNet-C conditions, 5 OOD sets, 10 ImageNet-X factors).
Prints seconds per figure and in total. Target: well under a minute on 2 cores.

    .venv/bin/python benchmarks/bench_figures.py [--out benchmarks/out/figures] [--logit-scaled]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from clip_robustness.demo.metrics import synthetic_metrics, synthetic_registry
from clip_robustness.figures import FIGURE_NAMES, render_figure
from clip_robustness.figures.tables import model_summary, registry_latex, registry_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/out/figures"), help="folder for the figures and tables"
    )
    parser.add_argument("--logit-scaled", action="store_true", help="logit-scaled accuracy axes")
    args = parser.parse_args()

    start = time.perf_counter()
    registry = synthetic_registry()
    metrics = synthetic_metrics(registry)
    print(
        f"synthetic inputs: {len(registry)} models, {len(metrics):,} metric rows ({time.perf_counter() - start:.1f} s)"
    )

    timings: dict[str, float] = {}
    for name in FIGURE_NAMES:
        t0 = time.perf_counter()
        render_figure(
            name, metrics, registry, args.out / f"{name}.png", args.out / f"{name}.pdf", logit_scaled=args.logit_scaled
        )
        timings[name] = time.perf_counter() - t0
        print(f"{name:<34s} {timings[name]:6.2f} s")
    t0 = time.perf_counter()
    table = registry_table(registry)
    table.to_csv(args.out / "model_registry.csv", index=False)
    (args.out / "model_registry.tex").write_text(registry_latex(table))
    model_summary(metrics, registry).to_csv(args.out / "model_summary.csv", index=False)
    timings["tables"] = time.perf_counter() - t0
    print(f"{'tables':<34s} {timings['tables']:6.2f} s")
    print(f"{'total (figures + tables)':<34s} {sum(timings.values()):6.2f} s -> {args.out}")


if __name__ == "__main__":
    main()
