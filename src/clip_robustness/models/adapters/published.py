"""A library's published top-1 accuracy, for the published-accuracy QC (:mod:`clip_robustness.qc.published_accuracy`).

An adapter whose library publishes results names its reference files (shipped in ``config/reference/``), reads
them, and looks a registry row up in them (:meth:`~clip_robustness.models.adapters.base.ModelAdapter.published_top1`);
what the adapters share for that is here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: One dataset's published top-1 in percent (NaN: not published) and where it was found (or what was looked for).
Published = tuple[float, str]


class ReferenceTableError(ValueError):
    """A reference table is missing or lacks a needed column; the message names the file and column."""


def read_reference_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A shipped reference table, checked to have ``columns`` (:class:`ReferenceTableError` naming them otherwise)."""
    if not path.is_file():
        raise ReferenceTableError(f"reference table {path} does not exist (see config/reference/README.md)")
    table = pd.read_csv(path, thousands=",")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ReferenceTableError(f"reference table {path}: missing column(s) {', '.join(map(repr, missing))}")
    return table
