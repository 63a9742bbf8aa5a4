"""Where a library publishes a model's top-1 accuracy, for the published-accuracy QC
(:mod:`clip_robustness.qc.published_accuracy`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReferenceKey:
    """Where a model's published top-1 is found: ``table`` (a reference-table family of
    :mod:`clip_robustness.qc.published_accuracy`), ``names`` (the model names to look up, first match wins),
    ``pretrained`` (the pretrained tag column, where the table has one) and ``img_size`` (where it has one)."""

    table: str
    names: tuple[str, ...]
    pretrained: str = ""
    img_size: int | None = None
