"""The open_clip adapter: zero-shot CLIP models built by ``open_clip.create_model_and_transforms``.

Registry rows: ``architecture`` is open_clip's config name (the ``-quickgelu`` config where the tag was
trained with QuickGELU), ``pretrained`` its pretrained tag; ids are ``openclip__{architecture}__{tag}``.
These models output image features: they need a zero-shot text head
(:mod:`clip_robustness.models.adapters.open_clip_head`, saved by :mod:`clip_robustness.models.zero_shot`), whose logits ``logit_scale * normalize(features) @ W`` are
computed in float32 with autocast disabled (:func:`~clip_robustness.models.adapters.text_head.zero_shot_logits`),
so the final layer is float32 whatever precision the image tower ran in.

Importing the adapter's library (first use) registers the tiny open_clip configs shipped in
``clip_robustness/resources/open_clip_configs/`` (used by the demo and the tests).
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Mapping

from clip_robustness.models.adapters.base import ModelAdapter
from clip_robustness.models.adapters.errors import ModelBuildError, RowProblem, UnsupportedPreprocessingError
from clip_robustness.models.adapters.published import Published, read_reference_csv
from clip_robustness.models.adapters.rows import plain_json, row_text, tuples
from clip_robustness.models.adapters.sources import WeightsLocation, hub_cache_dir, missing_weights, source_of

#: open_clip's published zero-shot results (``docs/openclip_results.csv``, shipped in ``config/reference/``): top-1 as
#: fractions, keyed by (``name``, ``pretrained``), and the column of each dataset of the QC.
OPEN_CLIP_FILE = "openclip_results.csv"
OPEN_CLIP_KEY = ("name", "pretrained")
OPEN_CLIP_COLUMNS = {
    "imagenet_val": "ImageNet 1k",
    "imagenet_v2_matched_frequency": "ImageNet v2",
    "imagenet_sketch": "ImageNet Sketch",
    "imagenet_r": "ImageNet-R",
    "imagenet_a": "ImageNet-A",
    "objectnet": "ObjectNet",
}

#: Folder of the tiny open_clip model configs shipped with the package (``{name}.json``).
OPEN_CLIP_CONFIG_DIR = Path(str(files("clip_robustness") / "resources" / "open_clip_configs"))

#: The preprocessing keys of a known tag kept when its weights come from a local file.
_TAG_PREPROCESSING_KEYS = ("mean", "std", "interpolation", "resize_mode")

QUICKGELU_SUFFIX = "-quickgelu"


def register_open_clip_configs(config_dir: Path = OPEN_CLIP_CONFIG_DIR) -> list[str]:
    """Register the shipped tiny open_clip configs with ``open_clip.add_model_config``.

    Returns the architecture names now available (the JSON file stems). Idempotent.
    """
    import open_clip

    names = sorted(p.stem for p in config_dir.glob("*.json"))
    if names and not set(names) <= set(open_clip.list_models()):
        open_clip.add_model_config(config_dir)
    return names


def _open_clip() -> Any:
    """open_clip, with the shipped configs registered."""
    import open_clip

    register_open_clip_configs()
    return open_clip


@lru_cache(maxsize=None)
def _pretrained_pairs() -> frozenset[tuple[str, str]]:
    return frozenset(tuple(pair) for pair in _open_clip().list_pretrained())


def _tag_cfg(architecture: str, tag: str) -> dict:
    """open_clip's pretrained config for ``(architecture, tag)``; ``{}`` when the tag is unknown or empty."""
    return dict(_open_clip().get_pretrained_cfg(architecture, tag) or {}) if tag else {}


def _image_size(model_cfg: Mapping[str, Any]) -> int:
    """The input size (pixels) of an open_clip model config's visual tower."""
    size = model_cfg["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[-1])


class OpenClipAdapter(ModelAdapter):
    name = "open_clip"
    distribution = "open_clip_torch"
    id_prefix = "openclip"
    needs_text_head = True
    tabled_decode_spec = True
    spec_stamp_distributions = ("open_clip_torch", "torchvision")
    cli_separator = ":"

    def prepare(self) -> None:
        register_open_clip_configs()

    def canonical_checkpoint(self, architecture: str, tag: str) -> tuple[str, str]:
        """Tags trained with QuickGELU run under the ``-quickgelu`` config (the registry's convention)."""
        if not tag or architecture.endswith(QUICKGELU_SUFFIX):
            return architecture, tag
        twin = f"{architecture}{QUICKGELU_SUFFIX}"
        if _tag_cfg(architecture, tag).get("quick_gelu") and twin in _open_clip().list_models():
            return twin, tag
        return architecture, tag

    def family_key(self, architecture: str) -> str:
        return architecture.removesuffix(QUICKGELU_SUFFIX)

    def library_input_size(self, architecture: str, tag: str) -> int:
        cfg = _open_clip().get_model_config(architecture)
        if cfg is None:
            raise ModelBuildError(f"architecture {architecture!r}: open_clip has no such model config")
        return _image_size(cfg)

    def embedding_dim(self, row: Mapping[str, Any]) -> int | None:
        self.prepare()
        cfg = _open_clip().get_model_config(row_text(row, "architecture"))
        return None if not cfg or cfg.get("embed_dim") is None else int(cfg["embed_dim"])

    def hub_checkpoints(self, repo_id: str) -> list[tuple[str, str]]:
        open_clip = _open_clip()
        return [
            (architecture, tag)
            for architecture, tag in open_clip.list_pretrained()
            if (open_clip.get_pretrained_cfg(architecture, tag).get("hf_hub") or "").strip("/") == repo_id
        ]

    def hub_rank(self, architecture: str) -> int:
        # open_clip lists OpenAI weights under a config and its -quickgelu twin: the twin is the registry's convention
        # and wins over every library; a plain config loses to another library's checkpoint of the same repo.
        return 0 if architecture.endswith(QUICKGELU_SUFFIX) else 2

    def catalogue_checkpoints(self) -> list[tuple[str, str, int]]:
        """Every pretrained pair, QuickGELU tags under their ``-quickgelu`` config, each pair once, in the library's
        order."""
        open_clip = _open_clip()
        models = set(open_clip.list_models())
        seen: dict[tuple[str, str], int] = {}
        for architecture, tag in open_clip.list_pretrained():
            cfg = open_clip.get_pretrained_cfg(architecture, tag) or {}
            twin = f"{architecture}{QUICKGELU_SUFFIX}"
            if cfg.get("quick_gelu") and not architecture.endswith(QUICKGELU_SUFFIX) and twin in models:
                architecture = twin
            model_cfg = open_clip.get_model_config(architecture)
            if model_cfg is None or (architecture, tag) in seen:
                continue
            seen[(architecture, tag)] = _image_size(model_cfg)
        return [(architecture, tag, size) for (architecture, tag), size in seen.items()]

    def registry_input_size(self, row: Mapping[str, Any]) -> int | None:
        open_clip = _open_clip()
        arch, tag = row_text(row, "architecture"), row_text(row, "pretrained")
        model_cfg = open_clip.get_model_config(arch)
        if model_cfg is None:
            raise RowProblem(f"open_clip {open_clip.__version__} has no model config {arch!r}")
        if not row_text(row, "weights_file"):
            if (arch, tag) not in _pretrained_pairs():
                raise RowProblem(f"({arch!r}, {tag!r}) is not in open_clip {open_clip.__version__} list_pretrained()")
            quick_gelu = _tag_cfg(arch, tag).get("quick_gelu", False)
            if quick_gelu and not (arch.endswith(QUICKGELU_SUFFIX) or model_cfg.get("quick_gelu", False)):
                raise RowProblem(f"tag {tag!r} was trained with QuickGELU; use the config {arch + QUICKGELU_SUFFIX!r}")
        return _image_size(model_cfg)

    def has_architecture(self, architecture: str) -> bool:
        return architecture in _open_clip().list_models()

    def _known_tag_cfg(self, row: Mapping[str, Any]) -> dict:
        arch, tag = row_text(row, "architecture"), row_text(row, "pretrained")
        cfg = _tag_cfg(arch, tag)
        if not cfg:
            raise ModelBuildError(
                f"model {row_text(row, 'model_id')!r}: open_clip has no pretrained tag {tag!r} for {arch!r}; known "
                f"tags: {_open_clip().list_pretrained_tags_by_model(arch)}"
            )
        return cfg

    def tag_weights_location(self, row: Mapping[str, Any]) -> WeightsLocation:
        cfg = self._known_tag_cfg(row)
        if cfg.get("hf_hub"):
            return WeightsLocation("hub", str(cfg["hf_hub"]))
        return WeightsLocation("url", str(cfg.get("url")))

    def download_weights(self, row: Mapping[str, Any], location: WeightsLocation) -> str | None:
        cfg = self._known_tag_cfg(row)
        source = f"hf hub repo {location.where!r}" if location.kind == "hub" else f"url {location.where!r}"
        where = f"open_clip {source} in the cache {hub_cache_dir()!r}"
        try:
            path = _open_clip().download_pretrained(cfg)
        except Exception as exc:  # the loader's own errors: offline, 404, checksum mismatch
            raise missing_weights(row_text(row, "model_id"), where, exc) from exc
        if not path:
            raise missing_weights(row_text(row, "model_id"), f"{where} (open_clip names no download)")
        return str(path)

    def weights_source(self, row: Mapping[str, Any], path: str) -> str:
        return source_of(path, str(self._known_tag_cfg(row).get("url", "")))

    @staticmethod
    def _quick_gelu(architecture: str, tag_cfg: Mapping[str, Any]) -> bool:
        return bool(tag_cfg.get("quick_gelu", False)) or architecture.endswith(QUICKGELU_SUFFIX)

    def build(self, row: Mapping[str, Any], device: Any, weights: str | None) -> tuple[Any, Callable, dict]:
        open_clip = _open_clip()
        arch, tag = row_text(row, "architecture"), row_text(row, "pretrained")
        tag_cfg = _tag_cfg(arch, tag)
        quick_gelu = self._quick_gelu(arch, tag_cfg)
        kwargs: dict[str, Any] = {"force_quick_gelu": quick_gelu}
        if row_text(row, "weights_file"):
            pretrained: str | None = weights
            # A local file of a known tag keeps that tag's preprocessing (mean/std, interpolation, resize).
            overrides = {k: tag_cfg[k] for k in _TAG_PREPROCESSING_KEYS if k in tag_cfg}
            if overrides:
                kwargs["force_preprocess_cfg"] = overrides
        else:
            pretrained = tag or None
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, device=device, **kwargs
        )
        cfg = dict(model.visual.preprocess_cfg)
        size = cfg["size"]
        size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
        info = {
            "library": self.name,
            "input_size": [3, *size],
            "resize_mode": cfg.get("resize_mode", "shortest"),
            # open_clip's eval transform resizes the shortest side to the input size, then centre-crops.
            "crop_pct": 1.0,
            "crop_mode": "center",
            "interpolation": str(cfg["interpolation"]),
            "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]],
            "quick_gelu": bool(quick_gelu),
            "transform": repr(preprocess),
        }
        return model.eval(), preprocess, info

    def classifier(self, model: Any, head: Any = None) -> Any:
        from clip_robustness.models.adapters.text_head import ZeroShotClassifier

        if head is None:
            raise ValueError("an open_clip model needs its zero-shot head to give ImageNet logits")
        return ZeroShotClassifier(model, head).eval()

    def tokenizer(self, row: Mapping[str, Any]) -> Callable:
        return _open_clip().get_tokenizer(row_text(row, "architecture"))

    def build_text_head(
        self,
        model: Any,
        row: Mapping[str, Any],
        prompt_set: str,
        device: Any,
        progress: bool = False,
        prompts: Any = None,
    ) -> Any:
        from clip_robustness.models.adapters.open_clip_head import build_zero_shot_head, build_zero_shot_head_from

        if prompts is not None:  # a prompt set of the ablation (clip_robustness.models.prompt_sets)
            return build_zero_shot_head_from(
                model, self.tokenizer(row), row_text(row, "model_id"), prompts, device=device, progress=progress
            )
        return build_zero_shot_head(
            model, self.tokenizer(row), row_text(row, "model_id"), prompt_set, device=device, progress=progress
        )

    def decode_recipe(self, row: Mapping[str, Any]) -> dict:
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        open_clip = _open_clip()
        arch, tag, weights_file = (
            row_text(row, "architecture"),
            row_text(row, "pretrained"),
            row_text(row, "weights_file"),
        )
        # Mirrors open_clip.create_model_and_transforms as build() calls it: defaults, then the tag's config (when
        # the tag itself is loaded), the visual tower's image size, then build's overrides for a local file.
        tag_cfg = _tag_cfg(arch, tag)
        cfg = asdict(PreprocessCfg())
        if tag_cfg and not weights_file:
            cfg = merge_preprocess_dict(cfg, tag_cfg)
        model_cfg = open_clip.get_model_config(arch)
        if model_cfg is None:
            raise UnsupportedPreprocessingError(f"open_clip has no model config {arch!r}")
        size = model_cfg.get("vision_cfg", {}).get("image_size", cfg["size"])
        cfg["size"] = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
        if weights_file:
            cfg = merge_preprocess_dict(cfg, {k: tag_cfg[k] for k in _TAG_PREPROCESSING_KEYS if k in tag_cfg})
        return {k: plain_json(v) for k, v in cfg.items()}

    def transform_from_recipe(self, recipe: Mapping[str, Any]) -> Callable:
        from open_clip.transform import PreprocessCfg, image_transform_v2

        return image_transform_v2(PreprocessCfg(**tuples(recipe)), is_train=False)

    def qc_reference_files(self) -> tuple[str, ...]:
        return (OPEN_CLIP_FILE,)

    def load_qc_references(self, directory: Path) -> Any:
        return read_reference_csv(directory / OPEN_CLIP_FILE, OPEN_CLIP_KEY + tuple(OPEN_CLIP_COLUMNS.values()))

    def published_top1(self, row: Mapping[str, Any], references: Any, datasets: tuple[str, ...]) -> list[Published]:
        """From open_clip's table (fractions, as percent): the first of the config name and, for a ``-quickgelu``
        config, its base name with a (``name``, ``pretrained``) row (open_clip's table lists the OpenAI weights, always
        loaded with QuickGELU, under the base config name only)."""
        arch, tag = row_text(row, "architecture"), row_text(row, "pretrained")
        names = (arch, arch.removesuffix(QUICKGELU_SUFFIX)) if arch.endswith(QUICKGELU_SUFFIX) else (arch,)
        for name in names:
            rows = references[(references["name"] == name) & (references["pretrained"] == tag)]
            if len(rows):
                found = rows.iloc[0]
                return [
                    (
                        100.0 * float(found[OPEN_CLIP_COLUMNS[d]]),
                        f"{OPEN_CLIP_FILE}: ({found['name']}, {tag}) [{OPEN_CLIP_COLUMNS[d]}]",
                    )
                    if d in OPEN_CLIP_COLUMNS
                    else (float("nan"), f"missing: open_clip publishes no {d} results")
                    for d in datasets
                ]
        return [(float("nan"), f"missing: no ({names[0]}, {tag}) row in {OPEN_CLIP_FILE}")] * len(datasets)
