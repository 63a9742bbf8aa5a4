"""The timm adapter: ImageNet classifiers built by ``timm.create_model`` with timm's pretrained configs.

Registry rows: ``architecture`` is timm's model name without the tag, ``pretrained`` the tag after the
dot (``convnext_tiny`` + ``fb_in1k``); model ids are timm's own name, ``timm__{architecture}.{tag}``. A tag
timm does not know (a local ``weights_file`` under a tag of one's own) builds the bare architecture with
that architecture's default config. The final layer (``forward_head``) runs in float32 on float32
features; ``forward_features`` runs under the job's autocast.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Mapping

from clip_robustness.models.adapters.base import (
    N_CLASSES,
    TIMM_RESULTS,
    ModelAdapter,
    ModelBuildError,
    ReferenceKey,
    RowProblem,
    UnsupportedPreprocessingError,
    WeightsLocation,
    float32_final_layer,
    hub_cache_dir,
    hub_offline,
    missing_weights,
    plain_json,
    row_text,
    tuples,
)


@lru_cache(maxsize=None)
def _pretrained_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_pretrained())


def timm_name(architecture: str, tag: str) -> str:
    """timm's model name for a registry (architecture, tag): ``arch.tag`` when timm knows the tag, else ``arch``
    (a tag of one's own, for a local weights file). The one place this rule is written."""
    return f"{architecture}.{tag}" if tag and f"{architecture}.{tag}" in _pretrained_names() else architecture


class TimmAdapter(ModelAdapter):
    name = "timm"
    distribution = "timm"
    id_prefix = "timm"
    id_separator = "."  # timm's own arch.tag name
    needs_text_head = False

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
        cfg = self._tag_cfg(row)
        if not cfg.get("hf_hub_id"):
            return WeightsLocation("url", str(cfg.get("url")))
        files = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else ("model.safetensors", "pytorch_model.bin")
        return WeightsLocation("hub", cfg["hf_hub_id"], files)

    def download_weights(self, row: Mapping[str, Any], location: WeightsLocation) -> str | None:
        model_id = row_text(row, "model_id")
        if location.kind == "url":
            if hub_offline():
                raise missing_weights(model_id, f"timm url {location.where!r} in the torch hub cache")
            return None  # timm downloads it from its url when building
        from huggingface_hub import hf_hub_download

        last_error: BaseException | None = None
        for filename in location.filenames:
            try:
                return str(hf_hub_download(repo_id=location.where, filename=filename))
            except Exception as exc:
                last_error = exc
        raise missing_weights(
            model_id,
            f"timm hf hub repo {location.where!r} ({' or '.join(location.filenames)}) in the cache {hub_cache_dir()!r}",
            last_error,
        )

    def build(self, row: Mapping[str, Any], device: Any, weights: str | None) -> tuple[Any, Callable, dict]:
        import timm

        name = timm_name(row_text(row, "architecture"), row_text(row, "pretrained"))
        if row_text(row, "weights_file"):
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": weights}, num_classes=N_CLASSES)
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

    def qc_reference_key(self, row: Mapping[str, Any]) -> ReferenceKey | None:
        name = f"{row_text(row, 'architecture')}.{row_text(row, 'pretrained')}"
        return ReferenceKey(TIMM_RESULTS, (name,), img_size=int(row["resolution"]))
