"""Rebuild ``config/reference/`` from the full published tables: only the rows and columns the QC needs.

Usage::

    python tools/build_reference_tables.py --source DIR_OF_PUBLISHED_TABLES [--registry config/models.tsv]
        [--out config/reference]

``--source`` holds the unchanged upstream files (open_clip ``docs/openclip_results.csv`` and timm
``results/results-*.csv``, ``results/model_metadata-in1k.csv``; commits in ``config/reference/README.md``).
Kept: open_clip rows of the registry's (config, tag) pairs (and the base-config row of a ``-quickgelu``
config), columns name, pretrained and the QC datasets; timm rows of the registry's ``arch.tag`` names
at every published img_size, columns model, img_size, top1, crop_pct, interpolation; timm's model
metadata whole (the registry builder cross-checks pretraining data against it). Values are not changed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

from clip_robustness.models.adapters.open_clip import OPEN_CLIP_COLUMNS, OPEN_CLIP_FILE, OPEN_CLIP_KEY
from clip_robustness.models.adapters.timm import TIMM_FILES
from clip_robustness.models.registry import load_model_registry

TIMM_KEEP = ("model", "img_size", "top1", "crop_pct", "interpolation")
METADATA_FILE = "timm-model_metadata-in1k.csv"


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--registry", type=Path, default=root / "config" / "models.tsv")
    parser.add_argument("--out", type=Path, default=root / "config" / "reference")
    args = parser.parse_args(argv)
    table = load_model_registry(args.registry).table
    args.out.mkdir(parents=True, exist_ok=True)

    open_clip = table[table["library"] == "open_clip"]
    pairs = set(zip(open_clip["architecture"], open_clip["pretrained"]))
    pairs |= {(arch.removesuffix("-quickgelu"), tag) for arch, tag in pairs}
    source = pd.read_csv(args.source / OPEN_CLIP_FILE, dtype=str, keep_default_na=False)
    keep = [(name, tag) in pairs for name, tag in zip(source["name"], source["pretrained"])]
    columns = list(OPEN_CLIP_KEY) + list(OPEN_CLIP_COLUMNS.values())
    source.loc[keep, columns].to_csv(args.out / OPEN_CLIP_FILE, index=False)
    print(f"{OPEN_CLIP_FILE}: {sum(keep)} rows")

    timm = table[table["library"] == "timm"]
    names = set(timm["architecture"] + "." + timm["pretrained"])
    for timm_file in TIMM_FILES.values():
        source = pd.read_csv(args.source / timm_file, dtype=str, keep_default_na=False)
        rows = source[source["model"].isin(names)]
        rows.loc[:, list(TIMM_KEEP)].to_csv(args.out / timm_file, index=False)
        print(f"{timm_file}: {len(rows)} rows")
    shutil.copyfile(args.source / METADATA_FILE, args.out / METADATA_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
