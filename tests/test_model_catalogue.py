"""The all-checkpoints registry (clip_robustness.models.catalogue, config/models-all-checkpoints.tsv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clip_robustness.models.catalogue import build_catalogue
from clip_robustness.models.registry import MODEL_COLUMNS, check_registry_against_libraries, load_model_registry

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "config" / "models-all-checkpoints.tsv"
PAPER = ROOT / "config" / "models.tsv"


@pytest.fixture(scope="module")
def catalogue():
    return load_model_registry(CATALOGUE)


def test_shipped_catalogue_is_what_the_pinned_libraries_list():
    rebuilt = build_catalogue(load_model_registry(PAPER).table[list(MODEL_COLUMNS)])
    shipped = pd.read_csv(CATALOGUE, sep="\t", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(rebuilt.astype(str), shipped)


def test_catalogue_starts_with_the_papers_210_rows_unchanged(catalogue):
    paper = load_model_registry(PAPER).table
    head = catalogue.table.iloc[: len(paper)]
    pd.testing.assert_frame_equal(head.reset_index(drop=True), paper)
    assert set(catalogue.table["study"].iloc[len(paper) :]) == {"catalogue"}


def test_every_catalogue_row_resolves_in_the_pinned_open_clip_and_timm(catalogue):
    assert check_registry_against_libraries(catalogue) == []


def test_every_open_clip_pair_and_every_timm_imagenet_1k_checkpoint_is_in_the_catalogue(catalogue):
    import open_clip
    import timm

    table = catalogue.table
    timm_names = set(
        table.loc[table["library"] == "timm", "architecture"]
        + "."
        + table.loc[table["library"] == "timm", "pretrained"]
    )
    in1k = {
        n
        for n in timm.list_pretrained()
        if timm.models.get_pretrained_cfg(n).num_classes == 1000 and "in1k" in n.split(".", 1)[1]
    }
    assert timm_names == in1k
    pairs = set(
        zip(
            table.loc[table["library"] == "open_clip", "architecture"].str.removesuffix("-quickgelu"),
            table.loc[table["library"] == "open_clip", "pretrained"],
        )
    )
    listed = {
        (a.removesuffix("-quickgelu"), t) for a, t in open_clip.list_pretrained() if open_clip.get_model_config(a)
    }
    assert pairs == listed
