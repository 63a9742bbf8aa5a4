"""The model registry: one row per model of the study, read from ``config/models.tsv``.

The registry is data, not code: adding a model is adding a row. Columns (tab-separated, in order):

=====================  ======================================================================
``model_id``           filesystem-safe unique id, used in paths ``results/logits/{model_id}/``;
                       convention set by the library's adapter: ``openclip__{architecture}__{pretrained}``,
                       ``timm__{architecture}.{pretrained}``, ``python__{module}.{function}__{pretrained}``
                       (see :func:`model_id_for`)
``library``            a key of :data:`clip_robustness.models.adapters.ADAPTERS`: ``open_clip``, ``timm``
                       or ``python`` (one's own ``module:function``)
``architecture``       open_clip config name (``-quickgelu`` config where the tag was trained with
                       QuickGELU), timm model name without the tag, or ``pkg.module:function``
``pretrained``         open_clip pretrained tag, the timm tag (after the dot), or one's own tag
``group``              ``clip_zeroshot``, ``clip_ft``, ``standard``, ``more_data``, ``adversarial``
``training_source``    (pre)training data: ``WIT-400M``, ``LAION-2B``, ``ImageNet-1k``, ``JFT-300M``, ...
``training_size``      number of training images of that source (int > 0; nominal published size)
``finetune_route``     supervised fine-tuning stages after that source: ``none``, ``in1k``,
                       ``in12k->in1k``, ``in22k->in1k``
``architecture_family``  ResNet, ViT, ConvNeXt, EfficientNet, ...
``resolution``         input size in pixels (int > 0), the side of the square crop the model sees
``weights_file``       empty: weights come through the library's loader; else a local weights path
``study``              optional: ``paper`` (the paper's models; also an empty cell or no column),
                       ``own`` (a user's model, added by ``python -m clip_robustness.models.add_model``)
                       or ``catalogue`` (a checkpoint of the libraries outside the paper's list,
                       :mod:`clip_robustness.models.catalogue`). Not part of a model's definition:
                       :meth:`ModelRegistry.row` leaves it out, :meth:`ModelRegistry.study` reads it.
=====================  ======================================================================

Zero-shot models (the group ``clip_zeroshot``) are exactly those whose library needs a text head
(:func:`clip_robustness.models.adapters.is_zero_shot`); a row where the two disagree is refused.
``group`` and ``training_source`` may be ``unknown`` (generated rows whose library does not state
them); ``training_size`` is then ``0``, and only then.

This module imports neither torch, open_clip nor timm (the Snakefile reads the registry at every
invocation); :func:`check_registry_against_libraries` imports the libraries when called. CLI::

    python -m clip_robustness.models.registry check config/models.tsv
"""

from __future__ import annotations

import argparse
import csv
import difflib
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clip_robustness.models.adapters import ADAPTERS, adapter_for, is_zero_shot
from clip_robustness.names import GROUPS, UNKNOWN_GROUP, ZERO_SHOT_GROUP

#: The columns that define a model (what :meth:`ModelRegistry.row` returns).
MODEL_COLUMNS: tuple[str, ...] = (
    "model_id",
    "library",
    "architecture",
    "pretrained",
    "group",
    "training_source",
    "training_size",
    "finetune_route",
    "architecture_family",
    "resolution",
    "weights_file",
)
#: Every column, in file order: the model's definition, then which study it belongs to.
REGISTRY_COLUMNS: tuple[str, ...] = (*MODEL_COLUMNS, "study")
OPTIONAL_COLUMNS: frozenset[str] = frozenset({"weights_file", "study"})
INTEGER_COLUMNS: tuple[str, ...] = ("training_size", "resolution")
#: Value of ``group`` / ``training_source`` where the library does not state it.
UNKNOWN = UNKNOWN_GROUP
#: Values of the ``study`` column: the paper's models (the default: empty cell or no column), a user's own models
#: (``add_model``), every other library checkpoint (``catalogue``). Only ``paper`` models make up the paper's groups,
#: their medians, trend fits, correlations and findings; see :func:`paper_rows`.
PAPER_STUDY, OWN_STUDY, CATALOGUE_STUDY = "paper", "own", "catalogue"
STUDIES: tuple[str, ...] = (PAPER_STUDY, OWN_STUDY, CATALOGUE_STUDY)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def study_of(table: pd.DataFrame) -> pd.Series:
    """The ``study`` of each row of a registry table (indexed like it): ``paper`` where the table has no ``study``
    column or the cell is empty."""
    if "study" not in table.columns:
        return pd.Series(PAPER_STUDY, index=table.index, dtype=object)
    study = table["study"].astype(object)
    return study.where(study.notna() & (study.astype(str) != ""), PAPER_STUDY).astype(str)


def paper_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a registry table that belong to the paper's study: the only models of the paper's groups, group
    medians, trend fits (effective robustness, calibration and OOD lines), correlations and findings. A user's
    ``own`` models and ``catalogue`` checkpoints are measured like them and compared against them, never mixed in."""
    return table[study_of(table) == PAPER_STUDY]


class RegistryError(ValueError):
    """The registry file is unreadable or invalid; the message names the file, row and column."""


class UnknownModelError(LookupError):
    """A model id that is not in the registry; the message names it and the closest known ids."""

    def __init__(self, model_id: str, known: Iterable[str], source: str | Path | None = None):
        self.model_id = model_id
        self.close_matches = difflib.get_close_matches(model_id, list(known), n=3, cutoff=0.6)
        where = f" in {source}" if source else ""
        hint = f"; did you mean {', '.join(self.close_matches)}?" if self.close_matches else ""
        super().__init__(f"unknown model id {model_id!r}{where}{hint}")

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return self.args[0]


def model_id_for(library: str, architecture: str, pretrained: str) -> str:
    """The conventional model id of a (library, architecture, pretrained tag) triple, as the library's adapter
    writes it (``openclip__{architecture}__{pretrained}``, ``timm__{architecture}.{pretrained}``: timm's own
    ``arch.tag`` name, ...). Reversed by :func:`parse_model_id`."""
    if library not in ADAPTERS:
        raise ValueError(f"unknown library {library!r}; expected one of {', '.join(ADAPTERS)}")
    return ADAPTERS[library].model_id(architecture, pretrained)


def parse_model_id(model_id: str) -> tuple[str, str, str]:
    """(library, architecture, pretrained) of an id written by :func:`model_id_for`."""
    prefix, sep, rest = model_id.partition("__")
    for library, adapter in ADAPTERS.items():
        parsed = adapter.parse_model_id(rest) if sep and prefix == adapter.id_prefix else None
        if parsed is not None:
            return (library, *parsed)
    formats = ", ".join(adapter.model_id("ARCH", "TAG") for adapter in ADAPTERS.values())
    raise ValueError(f"model id {model_id!r} does not follow {formats}")


@dataclass(frozen=True)
class ModelRegistry:
    """The validated registry. ``table`` is indexed 0..n-1 in file order, columns as in the file,
    ``training_size`` and ``resolution`` as int64, ``weights_file`` an empty string when unset."""

    path: Path
    table: pd.DataFrame

    @property
    def ids(self) -> list[str]:
        """All model ids, in file order."""
        return self.table["model_id"].tolist()

    def _position(self, model_id: str) -> int:
        positions = self._index
        if model_id not in positions:
            raise UnknownModelError(model_id, positions, self.path)
        return positions[model_id]

    @property
    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {model_id: i for i, model_id in enumerate(self.table["model_id"])}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    def row(self, model_id: str) -> dict:
        """The registry columns that define one model (all but ``study``), as plain Python values (ints for
        the integer columns)."""
        record = self.table.iloc[self._position(model_id)].to_dict()
        record.pop("study", None)
        for column in INTEGER_COLUMNS:
            record[column] = int(record[column])
        return record

    def study(self, model_id: str) -> str:
        """Which study the model belongs to: ``paper``, ``own`` or ``catalogue`` (see the ``study`` column)."""
        return self.table.at[self._position(model_id), "study"]

    def is_zero_shot(self, model_id: str) -> bool:
        """True for zero-shot models (:func:`clip_robustness.models.adapters.is_zero_shot`: their library needs a
        text head; the loader checks that they are the group ``clip_zeroshot``)."""
        return is_zero_shot(self.row(model_id))

    def select(self, ids_or_all: str | Iterable[str]) -> list[str]:
        """The ids a config asks for: ``"all"`` (file order) or a list (its order, duplicates dropped).

        Raises :class:`UnknownModelError` for the first id not in the registry.
        """
        if isinstance(ids_or_all, str):
            if ids_or_all == "all":
                return self.ids
            ids_or_all = [ids_or_all]
        selected: list[str] = []
        for model_id in ids_or_all:
            self._position(model_id)
            if model_id not in selected:
                selected.append(model_id)
        return selected


def _checked_row(
    path: Path, header: list[str], line: int, fields: list[str], first_line: dict[str, int]
) -> dict[str, str]:
    """One registry line as a row, validated (:class:`RegistryError` naming the file, line and column otherwise);
    records its id's line in ``first_line`` (to name a duplicate)."""
    if len(fields) > len(header):
        raise RegistryError(
            f"model registry {path}, line {line}: {len(fields)} fields but the header has {len(header)}"
        )
    row = {name: (fields[i].strip() if i < len(fields) else "") for i, name in enumerate(header)}
    row = {**{name: "" for name in OPTIONAL_COLUMNS}, **row}
    row["study"] = row["study"] or STUDIES[0]
    label = f"model registry {path}, line {line} (model_id {row['model_id']!r})"
    for name in REGISTRY_COLUMNS:
        if name not in OPTIONAL_COLUMNS and not row[name]:
            raise RegistryError(f"{label}: column {name!r} is empty")
    model_id = row["model_id"]
    if not _SAFE_ID.match(model_id):
        raise RegistryError(
            f"{label}: model_id must be filesystem-safe (letters, digits, '.', '_', '+', '-', "
            f"not starting with '.' or '-')"
        )
    if model_id in first_line:
        raise RegistryError(f"{label}: duplicate model_id, first defined on line {first_line[model_id]}")
    first_line[model_id] = line
    if row["library"] not in ADAPTERS:
        raise RegistryError(f"{label}: unknown library {row['library']!r}; expected one of {', '.join(ADAPTERS)}")
    if row["group"] not in GROUPS:
        raise RegistryError(f"{label}: unknown group {row['group']!r}; expected one of {', '.join(GROUPS)}")
    if (row["group"] == ZERO_SHOT_GROUP) != is_zero_shot(row):
        needs = "needs a" if is_zero_shot(row) else "has no"
        raise RegistryError(
            f"{label}: group {row['group']!r} but a {row['library']} model {needs} zero-shot text "
            f"head; zero-shot models, and only they, are group {ZERO_SHOT_GROUP!r}"
        )
    if row["study"] not in STUDIES:
        raise RegistryError(f"{label}: unknown study {row['study']!r}; expected one of {', '.join(STUDIES)}")
    for name in INTEGER_COLUMNS:
        unknown_size = name == "training_size" and row["training_source"] == UNKNOWN and row[name] == "0"
        if not unknown_size and (not row[name].isdigit() or int(row[name]) <= 0):
            hint = " (0 only with training_source unknown)" if name == "training_size" else ""
            raise RegistryError(f"{label}: column {name!r} must be a positive integer{hint}, got {row[name]!r}")
    return row


def load_model_registry(path: str | Path) -> ModelRegistry:
    """Read and validate a registry TSV.

    Raises :class:`RegistryError` naming the file (and the line and column where it applies) for:
    a missing file or column, an empty required field, a duplicate or non-filesystem-safe id,
    an unknown library or group, a non-integer or non-positive ``training_size``/``resolution``.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader, None)
            records = [(line, fields) for line, fields in enumerate(reader, start=2) if any(f.strip() for f in fields)]
    except OSError as error:
        raise RegistryError(f"model registry {path}: cannot read it ({error.strerror or error})") from error
    if header is None:
        raise RegistryError(
            f"model registry {path}: the file is empty; expected a header with {', '.join(REGISTRY_COLUMNS)}"
        )
    header = [name.strip() for name in header]
    missing = [name for name in REGISTRY_COLUMNS if name not in header and name not in OPTIONAL_COLUMNS]
    if missing:
        raise RegistryError(
            f"model registry {path}: missing column(s) {', '.join(missing)} "
            f"(expected tab-separated columns {', '.join(REGISTRY_COLUMNS)})"
        )

    rows: list[dict[str, str]] = []
    first_line: dict[str, int] = {}
    for line, fields in records:
        rows.append(_checked_row(path, header, line, fields, first_line))

    columns = header + [name for name in REGISTRY_COLUMNS if name not in header]
    table = pd.DataFrame(rows, columns=columns)
    for name in INTEGER_COLUMNS:
        table[name] = table[name].astype("int64")
    return ModelRegistry(path=path, table=table)


def check_registry_against_libraries(registry: ModelRegistry) -> list[str]:
    """Problems of a registry against the installed libraries, as messages (empty: all good).

    Checked by each row's adapter without downloading anything (:meth:`ModelAdapter.check_row`): open_clip,
    every (architecture, pretrained) pair is in ``open_clip.list_pretrained()`` and tags trained with QuickGELU use
    a ``-quickgelu`` config; timm, every ``architecture.pretrained`` is in ``timm.list_pretrained()``; python, the
    ``module:function`` imports; the registry's resolution is the library's input size. Rows with a
    ``weights_file`` only need an existing architecture and file.
    """
    problems: list[str] = []
    for record in registry.table.to_dict("records"):
        where = f"{registry.path}: {record['model_id']}"
        problems += [f"{where}: {problem}" for problem in adapter_for(record["library"]).check_row(record)]
    return problems


def main(argv: list[str] | None = None) -> int:
    """CLI: ``check PATH`` validates a registry against the installed libraries; exit status 1 on problems."""
    parser = argparse.ArgumentParser(
        prog="python -m clip_robustness.models.registry", description="Model registry tools."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a registry TSV against the installed model libraries")
    check.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        registry = load_model_registry(args.path)
    except RegistryError as error:
        print(error, file=sys.stderr)
        return 1
    problems = check_registry_against_libraries(registry)
    for problem in problems:
        print(problem, file=sys.stderr)
    counts = ", ".join(f"{group} {n}" for group, n in registry.table["group"].value_counts(sort=False).items())
    print(f"{args.path}: {len(registry.ids)} models ({counts}); {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
