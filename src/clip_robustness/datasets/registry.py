"""The dataset registry: which archives exist, where they come from, and how each dataset is read.

The registry is data (``config/datasets.yaml``), not code: a new dataset is one new entry. Its format:

.. code-block:: yaml

    archives:
      imagenet-r.tar:                  # the archive's file name: data/archives/{archive}
        url: https://...               # primary URL (http, https or file); null for user-supplied archives
        mirrors: [https://...]         # optional, tried in order after ``url``
        sha256: 18c6...                # published value, or null: pinned at first download, then enforced
        md5: a613...                   # optional, verified too when present
        size_bytes: 2191079936         # optional, verified when present
        source: "where url and checksums were read"
        user_supplied: false           # true: never fetched (ImageNet val); the user provides the file
        password: null                 # zip password, for password-protected zips (ObjectNet)
        notes: "..."                   # optional free text
    datasets:
      imagenet_r:
        title: ImageNet-R
        short_title: ImageNet-R        # optional: the name figures show (default: title)
        archives: [imagenet-r.tar]
        layout: wnid_folders           # manifest recipe, see clip_robustness.datasets.manifest.LAYOUT_RECIPES
        subdir: imagenet-r             # folder inside the extracted archive that holds the images
        label_space: imagenet_r        # imagenet1k | imagenet_r | imagenet_a | objectnet | ood
        n_images: 30000                # expected image count (documentation; a mismatch is logged)
      imagenet_val:                    # ...title, archives, layout: imagenet_val, ...; and only for that layout:
        labels_from: [devkit, imagenet_x]  # label sources (default [imagenet_x]); see below
        devkit_archive: ILSVRC2012_devkit_t12.tar.gz  # the archive of the ``devkit`` source

``labels_from`` (layout ``imagenet_val``): where the val labels come from. ``imagenet_x``: the
``filename_label.csv`` shipped in the imagenet-x package (always available). ``devkit``: the official
devkit ``devkit_archive`` (user-supplied, like the val tar): used when the user supplies it, and
required only when it is the sole source. Every available source is read; when several are, they
must agree on every file of the dataset (the manifest build fails naming the files otherwise).

A ``template`` entry expands to several dataset ids (ImageNet-C): ``id_format`` with ``{corruption}``
and ``{severity}``, ``corruption_archives`` (corruption -> archive), ``severities``, and a ``subdir``
that uses the same two fields. A template's ``short_title`` names the whole family (the figures' condition whose id
is the template's key, e.g. ``imagenet_c``: the mean over its corruptions and severities).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml

from clip_robustness.datasets.errors import RegistryError, UnknownDatasetError

#: Manifest recipes, by name (their code: :data:`clip_robustness.datasets.manifest.LAYOUT_RECIPES`).
LAYOUTS = ("imagenet_val", "wnid_folders", "class_index_folders", "objectnet", "ood_images", "cue_conflict")
#: Label spaces a dataset may declare (see :mod:`clip_robustness.datasets.label_spaces`).
LABEL_SPACES = ("imagenet1k", "imagenet_r", "imagenet_a", "objectnet", "ood", "cue_conflict")

_ARCHIVE_KEYS = {"url", "mirrors", "sha256", "md5", "size_bytes", "source", "user_supplied", "password", "notes"}
_DATASET_KEYS = {
    "title",
    "short_title",
    "archives",
    "layout",
    "subdir",
    "label_space",
    "n_images",
    "border_crop_px",
    "notes",
    "source",
    "labels_from",
    "devkit_archive",
    "category_mapping",
}
_TEMPLATE_KEYS = (_DATASET_KEYS - {"archives", "labels_from", "devkit_archive", "category_mapping"}) | {
    "template",
    "id_format",
    "corruption_archives",
    "severities",
}
#: Label sources of layout ``imagenet_val`` (``labels_from``); the default is the first.
VAL_LABEL_SOURCES = ("imagenet_x", "devkit")
_DEFAULT_LABELS_FROM = ("imagenet_x",)
_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "md5": re.compile(r"^[0-9a-f]{32}$")}


@dataclass(frozen=True)
class ArchiveEntry:
    """One downloadable archive.

    ``name``: file name under ``data/archives/``. ``urls``: URLs to try in order (a config override
    first, then the registry's ``url`` and ``mirrors``); empty for user-supplied archives.
    ``sha256``/``md5``: lower-case hex digests, or ``None`` when none is published (sha256 is then
    pinned at first download). ``size_bytes``: expected size in bytes, or ``None``.
    """

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    md5: str | None = None
    size_bytes: int | None = None
    source: str = ""
    user_supplied: bool = False
    password: str | None = None
    notes: str = ""

    @property
    def url(self) -> str | None:
        """The first URL tried, or ``None`` for user-supplied archives without one."""
        return self.urls[0] if self.urls else None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (rule params): JSON/YAML serialisable; inverse of :meth:`from_dict`."""
        return {
            "name": self.name,
            "urls": list(self.urls),
            "sha256": self.sha256,
            "md5": self.md5,
            "size_bytes": self.size_bytes,
            "source": self.source,
            "user_supplied": self.user_supplied,
            "password": self.password,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ArchiveEntry":
        return cls(**{**data, "urls": tuple(data["urls"])})


@dataclass(frozen=True)
class DatasetEntry:
    """How one dataset is obtained and read.

    ``archives``: archive names it needs (all extracted under ``data/extracted/{archive}/``; the
    images are read from the first one's ``subdir``). ``layout``: the manifest recipe.
    ``label_space``: ``imagenet1k``, ``imagenet_r``, ``imagenet_a``, ``objectnet`` or ``ood``
    (OOD sets carry label -1). ``n_images``: the published image count, or ``None``.
    ``border_crop_px``: pixels to crop from every side when an image is loaded (ObjectNet: 2, for its 1-pixel red border, as every reference loader).
    ``labels_from`` / ``devkit_archive`` (layout ``imagenet_val``): the label sources and the devkit
    archive (see the module docstring). ``short_title``: the name figures show (empty: ``title``); display only,
    so it is left out of :meth:`to_dict` (the rules' params; renaming it reruns no dataset job) and of equality.
    """

    id: str
    title: str
    archives: tuple[str, ...]
    layout: str
    subdir: str
    label_space: str
    n_images: int | None = None
    border_crop_px: int = 0
    notes: str = ""
    labels_from: tuple[str, ...] = _DEFAULT_LABELS_FROM
    devkit_archive: str | None = None
    #: Layout ``cue_conflict``: the category mapping (``model_vs_human_16``, the shipped one, or a TSV path;
    #: :mod:`clip_robustness.datasets.cue_conflict`).
    category_mapping: str | None = None
    short_title: str = field(default="", compare=False)  # display only: not the entry's identity, nor in to_dict

    @property
    def figure_title(self) -> str:
        """The name figures show: ``short_title``, else ``title``."""
        return self.short_title or self.title

    @property
    def label_archives(self) -> tuple[str, ...]:
        """Archives read for labels only (the ImageNet devkit), beside ``archives``: optional unless
        :attr:`label_archives_required`."""
        return (self.devkit_archive,) if "devkit" in self.labels_from and self.devkit_archive else ()

    @property
    def label_archives_required(self) -> bool:
        """True when the devkit is the only label source (then it must be supplied)."""
        return bool(self.label_archives) and "imagenet_x" not in self.labels_from

    @property
    def is_ood(self) -> bool:
        """True for out-of-distribution sets (every manifest label is -1)."""
        return self.label_space == "ood"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (rule params): JSON/YAML serialisable; inverse of :meth:`from_dict`."""
        return {
            "id": self.id,
            "title": self.title,
            "archives": list(self.archives),
            "layout": self.layout,
            "subdir": self.subdir,
            "label_space": self.label_space,
            "n_images": self.n_images,
            "border_crop_px": self.border_crop_px,
            "notes": self.notes,
            # only when set, so that the other datasets' rule params (and manifests) stay as they were
            **({"labels_from": list(self.labels_from)} if self.labels_from != _DEFAULT_LABELS_FROM else {}),
            **({"devkit_archive": self.devkit_archive} if self.devkit_archive else {}),
            **({"category_mapping": self.category_mapping} if self.category_mapping else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetEntry":
        return cls(
            **{
                **data,
                "archives": tuple(data["archives"]),
                "labels_from": tuple(data.get("labels_from", _DEFAULT_LABELS_FROM)),
            }
        )


@dataclass(frozen=True)
class _Template:
    key: str
    id_format: str
    corruption_archives: Mapping[str, str]
    severities: tuple[int, ...]
    base: Mapping[str, Any]
    pattern: re.Pattern[str] = field(repr=False, default=None)  # type: ignore[assignment]

    def ids(self) -> list[str]:
        return [
            self.id_format.format(corruption=c, severity=s) for c in self.corruption_archives for s in self.severities
        ]

    def expand(self, dataset_id: str) -> DatasetEntry | None:
        match = self.pattern.fullmatch(dataset_id)
        if match is None:
            return None
        corruption, severity = match["corruption"], int(match["severity"])
        if corruption not in self.corruption_archives or severity not in self.severities:
            return None
        fields = {k: v for k, v in self.base.items() if k in _DATASET_KEYS}
        return DatasetEntry(
            id=dataset_id,
            title=str(fields.get("title", self.key)).format(corruption=corruption, severity=severity),
            archives=(self.corruption_archives[corruption],),
            layout=fields["layout"],
            subdir=str(fields.get("subdir", ".")).format(corruption=corruption, severity=severity),
            label_space=fields["label_space"],
            n_images=fields.get("n_images"),
            border_crop_px=int(fields.get("border_crop_px", 0)),
            notes=str(fields.get("notes", "")),
        )


class DatasetRegistry:
    """The parsed registry: ``archives`` (name -> :class:`ArchiveEntry`) and the datasets."""

    def __init__(
        self,
        path: Path,
        archives: dict[str, ArchiveEntry],
        datasets: dict[str, DatasetEntry],
        templates: list[_Template],
    ) -> None:
        self.path = path
        self.archives = archives
        self._datasets = datasets
        self._templates = templates

    def known_ids(self) -> list[str]:
        """Every dataset id the registry can resolve (templates expanded), in registry order."""
        ids = list(self._datasets)
        for template in self._templates:
            ids.extend(template.ids())
        return ids

    def resolve(self, dataset_id: str) -> DatasetEntry:
        """The entry of ``dataset_id``; :class:`UnknownDatasetError` names it and close matches."""
        if dataset_id in self._datasets:
            return self._datasets[dataset_id]
        for template in self._templates:
            entry = template.expand(dataset_id)
            if entry is not None:
                return entry
        known = self.known_ids()
        close = get_close_matches(dataset_id, known, n=3)
        hint = f"; did you mean {close}?" if close else ""
        plain = [d for d in known if not any(t.pattern.fullmatch(d) for t in self._templates)]
        templates = [t.id_format for t in self._templates]
        raise UnknownDatasetError(
            f"dataset {dataset_id!r} is not in the dataset registry {self.path}{hint} "
            f"Known: {plain} and {templates} (corruptions {[sorted(t.corruption_archives) for t in self._templates]}, "
            f"severities {[list(t.severities) for t in self._templates]})."
        )

    def archive(self, name: str) -> ArchiveEntry:
        """The entry of archive ``name``; :class:`UnknownDatasetError` names it and the known ones."""
        try:
            return self.archives[name]
        except KeyError:
            raise UnknownDatasetError(
                f"archive {name!r} is not in the dataset registry {self.path}; known: {sorted(self.archives)}"
            ) from None

    def figure_titles(self, dataset_ids: Sequence[str]) -> dict[str, str]:
        """The names figures show for ``dataset_ids`` (:attr:`DatasetEntry.figure_title`), and for the family of each
        template with a ``short_title`` (under the template's key, e.g. ``imagenet_c``)."""
        titles = {dataset_id: self.resolve(dataset_id).figure_title for dataset_id in dataset_ids}
        titles.update({t.key: str(t.base["short_title"]) for t in self._templates if t.base.get("short_title")})
        return titles

    def datasets_using(self, archive: str) -> list[str]:
        """Dataset ids whose entry needs ``archive``, for images or labels (for error messages)."""
        return [
            d
            for d in self.known_ids()
            if archive in self.resolve(d).archives or archive in self.resolve(d).label_archives
        ]


def _fail(path: Path, where: str, what: str) -> RegistryError:
    return RegistryError(f"dataset registry {path}: {where}: {what}")


def _check_keys(path: Path, where: str, data: Any, allowed: set[str], required: Sequence[str]) -> None:
    if not isinstance(data, Mapping):
        raise _fail(path, where, f"expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(path, where, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise _fail(path, where, f"missing key(s) {missing}")


def _parse_archive(path: Path, name: str, data: Any, override: str | None) -> ArchiveEntry:
    where = f"archives.{name}"
    _check_keys(path, where, data, _ARCHIVE_KEYS, ["url", "sha256", "source"])
    for key, pattern in _HEX.items():
        value = data.get(key)
        if value is not None and not pattern.match(str(value)):
            raise _fail(path, f"{where}.{key}", f"{value!r} is not a lower-case hex {key} digest")
    user_supplied = bool(data.get("user_supplied", False))
    urls = [override] if override else []
    urls += [u for u in [data.get("url"), *(data.get("mirrors") or [])] if u and u not in urls]
    if not urls and not user_supplied:
        raise _fail(path, where, "no url (and not user_supplied)")
    size = data.get("size_bytes")
    return ArchiveEntry(
        name=name,
        urls=tuple(str(u) for u in urls),
        sha256=data.get("sha256"),
        md5=data.get("md5"),
        size_bytes=None if size is None else int(size),
        source=str(data.get("source") or ""),
        user_supplied=user_supplied,
        password=data.get("password"),
        notes=str(data.get("notes") or ""),
    )


def _check_dataset_fields(path: Path, where: str, data: Mapping[str, Any]) -> None:
    if data["layout"] not in LAYOUTS:
        raise _fail(path, f"{where}.layout", f"{data['layout']!r} is not one of {list(LAYOUTS)}")
    if data["label_space"] not in LABEL_SPACES:
        raise _fail(path, f"{where}.label_space", f"{data['label_space']!r} is not one of {list(LABEL_SPACES)}")


def _check_label_sources(
    path: Path, where: str, data: Mapping[str, Any], archives: Mapping[str, ArchiveEntry]
) -> tuple[str, ...]:
    """``labels_from`` and ``devkit_archive`` of a dataset entry, validated; the label sources."""
    if "labels_from" not in data and "devkit_archive" not in data:
        return _DEFAULT_LABELS_FROM
    if data["layout"] != "imagenet_val":
        raise _fail(
            path, where, f"labels_from/devkit_archive apply to layout imagenet_val only, not {data['layout']!r}"
        )
    sources = data.get("labels_from", list(_DEFAULT_LABELS_FROM))
    if (
        not isinstance(sources, list)
        or not sources
        or len(set(map(str, sources))) != len(sources)
        or any(s not in VAL_LABEL_SOURCES for s in sources)
    ):
        raise _fail(
            path,
            f"{where}.labels_from",
            f"{sources!r} is not a non-empty list of distinct items of {list(VAL_LABEL_SOURCES)}",
        )
    devkit = data.get("devkit_archive")
    if ("devkit" in sources) != (devkit is not None):
        raise _fail(path, where, "devkit_archive must be given exactly when labels_from lists devkit")
    if devkit is not None and devkit not in archives:
        raise _fail(path, f"{where}.devkit_archive", f"unknown archive {devkit!r}; known: {sorted(archives)}")
    return tuple(sources)


def _check_category_mapping(path: Path, where: str, data: Mapping[str, Any]) -> str | None:
    """``category_mapping`` of a ``cue_conflict`` entry (default: the shipped model-vs-human mapping); no other
    layout takes one, and a ``cue_conflict`` entry has label space ``cue_conflict``."""
    is_cue = data["layout"] == "cue_conflict"
    if is_cue != (data["label_space"] == "cue_conflict"):
        raise _fail(path, where, "layout cue_conflict and label_space cue_conflict go together")
    if "category_mapping" in data and not is_cue:
        raise _fail(path, f"{where}.category_mapping", f"applies to layout cue_conflict only, not {data['layout']!r}")
    return str(data.get("category_mapping") or "model_vs_human_16") if is_cue else None


def _parse_template(path: Path, key: str, data: Mapping[str, Any], archives: Mapping[str, ArchiveEntry]) -> _Template:
    """A ``template`` entry (ImageNet-C), validated: its keys, fields and corruption archives."""
    where = f"datasets.{key}"
    _check_keys(
        path, where, data, _TEMPLATE_KEYS, ["id_format", "corruption_archives", "severities", "layout", "label_space"]
    )
    _check_dataset_fields(path, where, data)
    for corruption, archive in data["corruption_archives"].items():
        if archive not in archives:
            raise _fail(path, f"{where}.corruption_archives.{corruption}", f"unknown archive {archive!r}")
    pattern = re.compile(
        re.escape(data["id_format"])
        .replace(re.escape("{corruption}"), r"(?P<corruption>[a-z_]+?)")
        .replace(re.escape("{severity}"), r"(?P<severity>\d+)")
    )
    return _Template(
        key,
        data["id_format"],
        dict(data["corruption_archives"]),
        tuple(int(s) for s in data["severities"]),
        dict(data),
        pattern,
    )


def _parse_dataset(path: Path, key: str, data: Any, archives: Mapping[str, ArchiveEntry]) -> DatasetEntry:
    """A dataset entry, validated: its keys, fields, label sources and archives."""
    where = f"datasets.{key}"
    _check_keys(path, where, data, _DATASET_KEYS, ["title", "archives", "layout", "label_space"])
    _check_dataset_fields(path, where, data)
    labels_from = _check_label_sources(path, where, data, archives)
    for archive in data["archives"]:
        if archive not in archives:
            raise _fail(path, f"{where}.archives", f"unknown archive {archive!r}; known: {sorted(archives)}")
    return DatasetEntry(
        id=key,
        title=str(data["title"]),
        archives=tuple(data["archives"]),
        layout=data["layout"],
        subdir=str(data.get("subdir") or "."),
        label_space=data["label_space"],
        n_images=data.get("n_images"),
        border_crop_px=int(data.get("border_crop_px", 0)),
        notes=str(data.get("notes") or ""),
        labels_from=labels_from,
        devkit_archive=data.get("devkit_archive"),
        category_mapping=_check_category_mapping(path, where, data),
        short_title=str(data.get("short_title") or ""),
    )


def load_dataset_registry(path: str | Path, url_overrides: Mapping[str, str] | None = None) -> DatasetRegistry:
    """Parse and validate the registry at ``path``.

    ``url_overrides``: archive name -> URL (a mirror), tried before the registry's URLs; an override
    for an archive the registry does not list is an error naming it. Raises :class:`RegistryError`
    naming the file and key of any problem.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RegistryError(f"dataset registry {path} does not exist (config key dataset_registry)") from None
    except yaml.YAMLError as err:
        raise RegistryError(f"dataset registry {path} is not valid YAML: {err}") from None
    _check_keys(path, "top level", raw, {"archives", "datasets", "version"}, ["archives", "datasets"])
    overrides = dict(url_overrides or {})
    unknown = sorted(set(overrides) - set(raw["archives"] or {}))
    if unknown:
        raise RegistryError(
            f"config downloads.url_overrides names archive(s) {unknown} that the dataset registry {path} does not "
            f"list; known archives: {sorted(raw['archives'] or {})}"
        )
    archives = {
        str(name): _parse_archive(path, str(name), data, overrides.get(str(name)))
        for name, data in (raw["archives"] or {}).items()
    }
    datasets: dict[str, DatasetEntry] = {}
    templates: list[_Template] = []
    for key, data in (raw["datasets"] or {}).items():
        if isinstance(data, Mapping) and data.get("template"):
            templates.append(_parse_template(path, str(key), data, archives))
        else:
            datasets[str(key)] = _parse_dataset(path, str(key), data, archives)
    registry = DatasetRegistry(path, archives, datasets, templates)
    ids = registry.known_ids()
    duplicates = sorted({d for d in ids if ids.count(d) > 1})
    if duplicates:
        raise RegistryError(f"dataset registry {path}: dataset id(s) {duplicates} defined twice")
    return registry
