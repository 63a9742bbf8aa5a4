"""Every pretrained checkpoint of the pinned libraries as registry rows: the all-checkpoints study.

``config/models-all-checkpoints.tsv`` holds the paper's registry (``study`` = ``paper``) followed by every
other checkpoint each adapter lists (:meth:`~clip_robustness.models.adapters.base.ModelAdapter.catalogue_checkpoints`,
``study`` = ``catalogue``), generated from the libraries' own lists and pretrained configs; today:

- open_clip: ``open_clip.list_pretrained()``; a tag trained with QuickGELU (its pretrained config says
  ``quick_gelu``) runs under the ``-quickgelu`` config, as in the paper's registry; the resolution is the
  model config's ``vision_cfg.image_size``; group ``clip_zeroshot``, fine-tuning route ``none`` (as every
  zero-shot library's checkpoints).
- timm: ``timm.list_pretrained()`` names whose pretrained config has a 1000-class head and whose tag names
  ImageNet-1k (``in1k``, timm's tag convention for the label set of the head); resolution from the config's
  ``input_size``.
- training source, its size, the group of timm checkpoints and the fine-tuning route: those the paper's
  registry gives the same tag (the tag names the training data and route in both libraries), else
  ``unknown`` (size 0); architecture family: the paper's for the same architecture, else ``unknown``.

Switch the study to it with ``model_registry: config/models-all-checkpoints.tsv`` (``config/all-checkpoints.yaml``).
Rebuild after a library upgrade::

    HF_HUB_OFFLINE=1 python -m clip_robustness.models.catalogue [--paper config/models.tsv]
        [--out config/models-all-checkpoints.tsv]

Nothing is downloaded and no model is built.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from clip_robustness.models.adapters import ADAPTERS, adapter_for
from clip_robustness.models.registry import (
    CATALOGUE_STUDY,
    MODEL_COLUMNS,
    PAPER_STUDY,
    REGISTRY_COLUMNS,
    UNKNOWN,
    ZERO_SHOT_GROUP,
    load_model_registry,
    model_id_for,
)

#: Columns a paper row lends to a generated row with the same tag.
_BY_TAG = ("group", "training_source", "training_size", "finetune_route")


def _unique_by(table: pd.DataFrame, key: pd.Series, columns: tuple[str, ...]) -> dict[str, dict]:
    """key -> the values of ``columns`` where every row with that key agrees on them."""
    out = {}
    for value, rows in table.groupby(key):
        distinct = rows[list(columns)].drop_duplicates()
        if len(distinct) == 1:
            out[value] = distinct.iloc[0].to_dict()
    return out


def build_catalogue(paper: pd.DataFrame) -> pd.DataFrame:
    """The all-checkpoints registry table: ``paper`` rows (``study`` paper), then every other checkpoint."""
    paper = paper.copy()
    paper["study"] = PAPER_STUDY
    base = pd.Series(
        [
            adapter_for(library).family_key(architecture)
            for library, architecture in zip(paper["library"], paper["architecture"])
        ],
        index=paper.index,
    )
    families = _unique_by(paper, base, ("architecture_family",))
    by_tag = {library: _unique_by(rows, rows["pretrained"], _BY_TAG) for library, rows in paper.groupby("library")}
    known = set(zip(paper["library"], paper["architecture"], paper["pretrained"]))

    rows = []
    listed = [(library, *c) for library, adapter in ADAPTERS.items() for c in adapter.catalogue_checkpoints()]
    for library, architecture, tag, resolution in listed:
        if (library, architecture, tag) in known:
            continue
        stated = by_tag.get(library, {}).get(tag, {})
        zero_shot = ADAPTERS[library].needs_text_head  # a zero-shot checkpoint: its group, and no fine-tuning
        group = ZERO_SHOT_GROUP if zero_shot else stated.get("group", UNKNOWN)
        source = stated.get("training_source", UNKNOWN)
        rows.append(
            {
                "model_id": model_id_for(library, architecture, tag),
                "library": library,
                "architecture": architecture,
                "pretrained": tag,
                "group": group,
                "training_source": source,
                "training_size": int(stated.get("training_size", 0)) if source != UNKNOWN else 0,
                "finetune_route": stated.get("finetune_route", "none" if zero_shot else UNKNOWN),
                "architecture_family": families.get(ADAPTERS[library].family_key(architecture), {}).get(
                    "architecture_family", UNKNOWN
                ),
                "resolution": resolution,
                "weights_file": "",
                "study": CATALOGUE_STUDY,
            }
        )
    table = pd.concat(
        [paper[list(REGISTRY_COLUMNS)], pd.DataFrame(rows, columns=list(REGISTRY_COLUMNS))], ignore_index=True
    )
    return table.astype({"training_size": "int64", "resolution": "int64"})


def write_catalogue(table: pd.DataFrame, path: str | Path) -> None:
    """Write the registry TSV (tab-separated, header, no index)."""
    table.to_csv(path, sep="\t", index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clip_robustness.models.catalogue", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--paper", type=Path, default=Path("config/models.tsv"))
    parser.add_argument("--out", type=Path, default=Path("config/models-all-checkpoints.tsv"))
    args = parser.parse_args(argv)
    table = build_catalogue(load_model_registry(args.paper).table[list(MODEL_COLUMNS)])
    write_catalogue(table, args.out)
    counts = table.groupby(["study", "library"]).size().to_dict()
    print(f"{args.out}: {len(table)} models {counts}; group unknown: {int((table['group'] == UNKNOWN).sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
