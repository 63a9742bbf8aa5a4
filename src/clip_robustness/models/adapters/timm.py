"""The timm adapter: ImageNet classifiers built by ``timm.create_model`` with timm's pretrained configs.

Registry rows: ``architecture`` is timm's model name without the tag, ``pretrained`` the tag after the
dot (``convnext_tiny`` + ``fb_in1k``); model ids are timm's own name, ``timm__{architecture}.{tag}``. A tag
timm does not know (a local ``weights_file`` under a tag of one's own) builds the bare architecture with
that architecture's default config. The final layer (``forward_head``) runs in float32 on float32
features; ``forward_features`` runs under the job's autocast.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

from clip_robustness.models.adapters.base import ModelAdapter
from clip_robustness.models.adapters.errors import ModelBuildError, RowProblem, UnsupportedPreprocessingError
from clip_robustness.models.adapters.final_layer import N_CLASSES, float32_final_layer
from clip_robustness.models.adapters.published import Published, read_reference_csv
from clip_robustness.models.adapters.rows import plain_json, row_text, tuples
from clip_robustness.models.adapters.sources import (
    WeightsLocation,
    hub_cache_dir,
    hub_offline,
    missing_weights,
    source_of,
)

#: timm's published results (``results/results-*.csv``, shipped in ``config/reference/``): top-1 in percent, keyed by
#: ``model`` = ``arch.tag`` and ``img_size``, one file per dataset of the QC (ImageNet-A/-R on their 200-class subsets,
#: as our metric is; no ObjectNet).
TIMM_FILES = {
    "imagenet_val": "timm-results-imagenet.csv",
    "imagenet_v2_matched_frequency": "timm-results-imagenetv2-matched-frequency.csv",
    "imagenet_sketch": "timm-results-sketch.csv",
    "imagenet_r": "timm-results-imagenet-r.csv",
    "imagenet_a": "timm-results-imagenet-a.csv",
}
TIMM_COLUMNS = ("model", "img_size", "top1")


@lru_cache(maxsize=None)
def _pretrained_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_pretrained())


def timm_name(architecture: str, tag: str) -> str:
    """timm's model name for a registry (architecture, tag): ``arch.tag`` when timm knows the tag, else ``arch``
    (a tag of one's own, for a local weights file). The one place this rule is written."""
    return f"{architecture}.{tag}" if tag and f"{architecture}.{tag}" in _pretrained_names() else architecture


def _hub_file(hub_id: str, filename: str, custom_load: bool) -> str:
    """The cached file timm's ``load_pretrained`` reads for a hub source: an explicit ``.safetensors`` or
    custom-load file as named; otherwise the safetensors alternative when the repo has it, else the file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from timm.models._hub import _get_safe_alternatives, hf_split

    repo_id, revision = hf_split(hub_id)
    if not (custom_load or filename.endswith(".safetensors")):
        for safe_filename in _get_safe_alternatives(filename):
            try:
                return hf_hub_download(repo_id=repo_id, filename=safe_filename, revision=revision)
            except EntryNotFoundError:
                pass
    return hf_hub_download(repo_id=repo_id, filename=filename, revision=revision)


class TimmAdapter(ModelAdapter):
    name = "timm"
    distribution = "timm"
    id_prefix = "timm"
    id_separator = "."  # timm's own arch.tag name
    needs_text_head = False
    tabled_decode_spec = True
    spec_stamp_distributions = ("timm", "torchvision")
    cli_separator = "."

    def library_input_size(self, architecture: str, tag: str) -> int:
        import timm

        name = timm_name(architecture, tag)
        if not timm.is_model(architecture):
            raise ModelBuildError(f"architecture {architecture!r}: timm has no such model (see timm.list_models())")
        return int(timm.models.get_pretrained_cfg(name).input_size[-1])

    def hub_checkpoints(self, repo_id: str) -> list[tuple[str, str]]:
        import timm

        return [
            tuple(name.partition(".")[::2])
            for name in timm.list_pretrained()  # type: ignore[misc]
            if timm.models.get_pretrained_cfg(name).hf_hub_id == repo_id
        ]

    def catalogue_checkpoints(self) -> list[tuple[str, str, int]]:
        """Every pretrained checkpoint with an ImageNet-1k head: a 1000-class config whose tag names ImageNet-1k
        (``in1k``, timm's tag convention for the label set of the head)."""
        import timm

        found = []
        for name in timm.list_pretrained():
            cfg = timm.models.get_pretrained_cfg(name)
            architecture, _, tag = name.partition(".")
            if cfg.num_classes == N_CLASSES and "in1k" in tag:
                found.append((architecture, tag, int(cfg.input_size[-1])))
        return found

    def registry_input_size(self, row: Mapping[str, Any]) -> int | None:
        import timm

        arch, tag = row_text(row, "architecture"), row_text(row, "pretrained")
        if row_text(row, "weights_file"):
            if not timm.is_model(arch):
                raise RowProblem(f"timm {timm.__version__} has no model {arch!r}")
            cfg = timm.models.get_pretrained_cfg(arch)
            return cfg.input_size[-1] if cfg else None
        if f"{arch}.{tag}" not in _pretrained_names():
            raise RowProblem(f"{arch}.{tag} is not in timm {timm.__version__} list_pretrained()")
        return timm.models.get_pretrained_cfg(f"{arch}.{tag}").input_size[-1]

    def has_architecture(self, architecture: str) -> bool:
        import timm

        return timm.is_model(architecture)

    def _tag_cfg(self, row: Mapping[str, Any]) -> dict:
        import timm

        arch, tag = row_text(row, "architecture"), row_text(row, "pretrained")
        if f"{arch}.{tag}" not in _pretrained_names():
            raise ModelBuildError(
                f"model {row_text(row, 'model_id')!r}: timm has no pretrained tag {tag!r} for {arch!r}; known: "
                f"{timm.list_pretrained(f'{arch}.*')}"
            )
        return timm.models.get_pretrained_cfg(f"{arch}.{tag}").to_dict()

    def tag_weights_location(self, row: Mapping[str, Any]) -> WeightsLocation:
        """The source timm's own resolution picks (``timm.models._builder._resolve_pretrained_source``): a hub repo
        (the file it names, else timm's default weights name) or its URL."""
        from timm.models._builder import _resolve_pretrained_source
        from timm.models._hub import HF_WEIGHTS_NAME

        load_from, location = _resolve_pretrained_source(self._tag_cfg(row))
        if load_from == "hf-hub":
            hub_id, filename = location if isinstance(location, (tuple, list)) else (location, None)
            return WeightsLocation("hub", str(hub_id), (filename or HF_WEIGHTS_NAME,))
        if load_from == "url":
            return WeightsLocation("url", str(location))
        raise ModelBuildError(f"model {row_text(row, 'model_id')!r}: timm names no download source ({load_from!r})")

    def download_weights(self, row: Mapping[str, Any], location: WeightsLocation) -> str | None:
        """The file timm's ``load_pretrained`` reads, fetched where timm looks for it: the hub cache (with timm's
        safetensors preference) or, for a URL, the torch hub cache."""
        model_id = row_text(row, "model_id")
        if location.kind == "url":
            if hub_offline():
                raise missing_weights(model_id, f"timm url {location.where!r} in the torch hub cache")
            from timm.models._hub import download_cached_file

            try:
                return str(download_cached_file(location.where, check_hash=False))
            except Exception as exc:
                raise missing_weights(model_id, f"timm url {location.where!r} in the torch hub cache", exc) from exc
        custom_load = bool(self._tag_cfg(row).get("custom_load"))
        try:
            return str(_hub_file(location.where, location.filenames[0], custom_load))
        except Exception as exc:
            raise missing_weights(
                model_id,
                f"timm hf hub repo {location.where!r} ({location.filenames[0]}) in the cache {hub_cache_dir()!r}",
                exc,
            ) from exc

    def weights_source(self, row: Mapping[str, Any], path: str) -> str:
        location = self.weights_location(row)
        return location.where if location.kind == "url" else source_of(path)

    def build(self, row: Mapping[str, Any], device: Any, weights: str | None) -> tuple[Any, Callable, dict]:
        import timm

        name = timm_name(row_text(row, "architecture"), row_text(row, "pretrained"))
        if row_text(row, "weights_file"):
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": weights}, num_classes=N_CLASSES
            )
        else:
            model = timm.create_model(name, pretrained=bool(row_text(row, "pretrained")), num_classes=N_CLASSES)
        data_config = timm.data.resolve_model_data_config(model)
        preprocess = timm.data.create_transform(**data_config, is_training=False)
        info = {
            "library": self.name,
            "input_size": [int(v) for v in data_config["input_size"]],
            "resize_mode": "shortest",
            "crop_pct": float(data_config["crop_pct"]),
            "crop_mode": str(data_config.get("crop_mode", "center")),
            "interpolation": str(data_config["interpolation"]),
            "mean": [float(v) for v in data_config["mean"]],
            "std": [float(v) for v in data_config["std"]],
            "transform": repr(preprocess),
        }
        return model.to(device).eval(), preprocess, info

    def classifier(self, model: Any, head: Any = None) -> Any:
        return float32_final_layer(model)

    def decode_recipe(self, row: Mapping[str, Any]) -> dict:
        import timm
        from timm.data import resolve_data_config

        name = timm_name(row_text(row, "architecture"), row_text(row, "pretrained"))
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            raise UnsupportedPreprocessingError(f"timm has no pretrained config for {name!r}")
        return {k: plain_json(v) for k, v in resolve_data_config(pretrained_cfg=cfg.to_dict()).items()}

    def transform_from_recipe(self, recipe: Mapping[str, Any]) -> Callable:
        from timm.data import create_transform

        return create_transform(**tuples(recipe), is_training=False)

    def qc_reference_files(self) -> tuple[str, ...]:
        return tuple(TIMM_FILES.values())

    def load_qc_references(self, directory: Path) -> Any:
        return {name: read_reference_csv(directory / name, TIMM_COLUMNS) for name in TIMM_FILES.values()}

    def published_top1(self, row: Mapping[str, Any], references: Any, datasets: tuple[str, ...]) -> list[Published]:
        """From timm's table of each dataset, at the registry's resolution (``img_size``)."""
        name, size = f"{row_text(row, 'architecture')}.{row_text(row, 'pretrained')}", int(row["resolution"])
        return [self._published_at(references, name, size, dataset) for dataset in datasets]

    @staticmethod
    def _published_at(references: Mapping[str, Any], name: str, size: int, dataset: str) -> Published:
        file = TIMM_FILES.get(dataset)
        if file is None:
            return float("nan"), f"missing: timm publishes no {dataset} results"
        rows = references[file][references[file]["model"] == name]
        at_size = rows[rows["img_size"] == size]
        if len(at_size):
            return float(at_size["top1"].iloc[0]), f"{file}: {name} @ {size}px"
        if len(rows):
            sizes = ", ".join(str(s) for s in sorted(rows["img_size"].unique()))
            return float("nan"), f"missing: {file} has {name} only at img_size {sizes}, not {size}"
        return float("nan"), f"missing: no {name} row in {file}"
