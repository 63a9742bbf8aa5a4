"""Append parameter-count estimates to config/throughput.tsv for every registry architecture without a row (a command).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/estimate_throughput.py [--gpu H100] [--registry config/models.tsv]

Counts each architecture's image-tower parameters (open_clip: ``model.visual``; timm: the whole classifier) on
PyTorch's ``meta`` device (no memory, no weights) and its input pixels (the decoded geometry), then scales the
measured rows of ``--gpu``: images/s = K / (Mparams x pixels / 224^2), K = the median over measured rows of
images/s x Mparams x pixels / 224^2. Rows are written with ``source`` = ``estimated``: replace them with
measurements (benchmarks/bench_throughput.py) when you can. A guess within a factor of ~3, enough to budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

REPO = Path(__file__).resolve().parents[1]


def tower_params(library: str, architecture: str) -> int:
    """Parameters of the image tower, counted on the meta device."""
    with torch.device("meta"):
        if library == "timm":
            import timm

            model = timm.create_model(architecture, pretrained=False)
        else:
            import open_clip

            import clip_robustness.models.build  # noqa: F401  (tiny demo configs)

            model = open_clip.create_model(architecture, pretrained=None, device="meta").visual
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="H100")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--registry", type=Path, default=REPO / "config" / "models.tsv")
    parser.add_argument("--table", type=Path, default=REPO / "config" / "throughput.tsv")
    args = parser.parse_args(argv)

    from clip_robustness.logits.geometry import decode_spec_for_row
    from clip_robustness.logits.plan import read_throughput
    from clip_robustness.models.registry import load_model_registry

    table = read_throughput(args.table)
    registry = load_model_registry(args.registry)
    rows = {}
    for model in registry.select("all"):
        row = dict(registry.row(model))
        rows.setdefault((str(row["library"]), str(row["architecture"])), row)
    pixels = {key: (lambda s: s[0] * s[1] / 224**2)(decode_spec_for_row(row).input_size) for key, row in rows.items()}
    mine = table[(table["gpu"] == args.gpu) & (table["precision"] == args.precision)]
    measured = mine[mine["source"] == "measured"]
    constants = []
    for _, m in measured.iterrows():
        key = (m["library"], m["architecture"])
        px = pixels.get(key, 1.0)
        constants.append(float(m["images_per_s"]) * tower_params(*key) / 1e6 * px)
    k = statistics.median(constants)
    ceiling = float(measured["images_per_s"].max())  # small models are bound by launches and input, not parameters
    have = {(r["library"], r["architecture"]) for _, r in mine.iterrows()}
    new = []
    for key in sorted(rows):
        if key in have:
            continue
        mparams = tower_params(*key) / 1e6
        estimate = k / (mparams * pixels[key])
        capped = "; capped at the fastest measured row" if estimate > ceiling else ""
        new.append(
            f"{args.gpu}\t{key[0]}\t{key[1]}\t{args.precision}\t{min(estimate, ceiling):.0f}\testimated\t"
            f"{mparams:.1f} M image-tower parameters, {pixels[key]:.2f}x 224^2 pixels; K = {k:,.0f} "
            f"(median of {len(constants)} measured rows){capped}\n"
        )
        print(new[-1], end="")
    with open(args.table, "a") as stream:
        stream.writelines(new)
    print(f"appended {len(new)} estimated rows to {args.table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
