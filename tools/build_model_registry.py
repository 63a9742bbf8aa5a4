"""Rebuild ``config/models.tsv`` (the 210-model registry) from curated lists and the pinned libraries.

Usage::

    HF_HUB_OFFLINE=1 python tools/build_model_registry.py [--out config/models.tsv]
        [--timm-metadata config/reference/timm-model_metadata-in1k.csv]

What is curated here (data, in the lists below): which models make up the study, their training
source and its size, and the fine-tuning route. What is *derived* from the pinned libraries, so it
cannot drift from them:

- open_clip: the ``-quickgelu`` config is chosen when the tag's pretrained config says
  ``quick_gelu=True`` (``open_clip.get_pretrained_cfg``), the resolution from the model config's
  ``vision_cfg.image_size``;
- timm: the resolution from the tag's pretrained config (``timm.models.get_pretrained_cfg``);
- every ``standard`` / ``more_data`` model that timm's ``results/model_metadata-in1k.csv`` lists
  (old names mapped through timm's own deprecation table) must agree with it on the pretraining data,
  or the build fails.

Nothing is downloaded. Conventions (model ids, columns, fine-tuning route) are documented in
``clip_robustness.models.registry``; the sources of the training-set sizes beside ``TRAINING_SIZES``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from clip_robustness.models.registry import MODEL_COLUMNS, model_id_for

# --------------------------------------------------------------------------- training sources
# Name -> number of training images: the nominal size its publication names the data set by.
#   WIT-400M: Radford et al. 2021 (CLIP). YFCC-15M: the CLIP paper's filtered YFCC100M subset.
#   CC12M: Changpinyo et al. 2021. LAION-400M: Schuhmann et al. 2021. LAION-2B: the English subset of
#   LAION-5B (Schuhmann et al. 2022; 2.32B pairs, named "2B"). LAION-Aesthetic: open_clip README
#   ("LAION-A", ~900M aesthetic-filtered, pHash-deduplicated subset of LAION-2B). DataComp-S/M/L/1B: the
#   best filtered subsets of the small/medium/large/xlarge pools (Gadre et al. 2023: 1.4M/14M/140M/1.4B).
#   Merged-2B: EVA-CLIP (Sun et al. 2023; 1.6B LAION-2B + 0.4B COYO-700M). ImageNet-1k: train split.
#   ImageNet-21k (= timm's in21k/in22k tags): fall 2011 release. IG-1B: the 940M Instagram images of
#   Mahajan et al. 2018 / Yalniz et al. 2019. YFCC-100M: Thomee et al. 2016. JFT-300M: Sun et al. 2017.
TRAINING_SIZES: dict[str, int] = {
    "WIT-400M": 400_000_000,
    "YFCC-15M": 15_000_000,
    "CC12M": 12_000_000,
    "LAION-400M": 400_000_000,
    "LAION-2B": 2_000_000_000,
    "LAION-Aesthetic": 900_000_000,
    "DataComp-S": 1_400_000,
    "DataComp-M": 14_000_000,
    "DataComp-L": 140_000_000,
    "DataComp-1B": 1_400_000_000,
    "Merged-2B": 2_000_000_000,
    "ImageNet-1k": 1_281_167,
    "ImageNet-21k": 14_197_122,
    "IG-1B": 940_000_000,
    "YFCC-100M": 100_000_000,
    "JFT-300M": 300_000_000,
}

# --------------------------------------------------------------------------- 51 zero-shot CLIP (open_clip)
# (open_clip base config name, pretrained tag, training source); the -quickgelu config is derived.
CLIP_ZEROSHOT: list[tuple[str, str, str]] = [
    *[
        (arch, "openai", "WIT-400M")
        for arch in [
            "RN50",
            "RN101",
            "RN50x4",
            "RN50x16",
            "RN50x64",
            "ViT-B-32",
            "ViT-B-16",
            "ViT-L-14",
            "ViT-L-14-336",
        ]
    ],
    ("RN50", "yfcc15m", "YFCC-15M"),
    ("RN101", "yfcc15m", "YFCC-15M"),
    ("RN50", "cc12m", "CC12M"),
    ("ViT-B-32", "laion400m_e31", "LAION-400M"),
    ("ViT-B-32", "laion400m_e32", "LAION-400M"),
    ("ViT-B-16", "laion400m_e31", "LAION-400M"),
    ("ViT-B-16", "laion400m_e32", "LAION-400M"),
    ("ViT-B-16-plus-240", "laion400m_e31", "LAION-400M"),
    ("ViT-B-16-plus-240", "laion400m_e32", "LAION-400M"),
    ("ViT-L-14", "laion400m_e31", "LAION-400M"),
    ("ViT-L-14", "laion400m_e32", "LAION-400M"),
    ("convnext_base", "laion400m_s13b_b51k", "LAION-400M"),
    ("ViT-B-32", "laion2b_e16", "LAION-2B"),
    ("ViT-B-32", "laion2b_s34b_b79k", "LAION-2B"),
    ("ViT-B-16", "laion2b_s34b_b88k", "LAION-2B"),
    ("ViT-L-14", "laion2b_s32b_b82k", "LAION-2B"),
    ("ViT-H-14", "laion2b_s32b_b79k", "LAION-2B"),
    ("ViT-g-14", "laion2b_s12b_b42k", "LAION-2B"),
    ("ViT-g-14", "laion2b_s34b_b88k", "LAION-2B"),
    ("ViT-bigG-14", "laion2b_s39b_b160k", "LAION-2B"),
    ("convnext_base_w", "laion2b_s13b_b82k", "LAION-2B"),
    ("convnext_base_w", "laion2b_s13b_b82k_augreg", "LAION-2B"),
    ("convnext_large_d", "laion2b_s26b_b102k_augreg", "LAION-2B"),
    ("convnext_large_d_320", "laion2b_s29b_b131k_ft", "LAION-2B"),
    ("convnext_large_d_320", "laion2b_s29b_b131k_ft_soup", "LAION-2B"),
    ("convnext_xxlarge", "laion2b_s34b_b82k_augreg", "LAION-2B"),
    ("convnext_xxlarge", "laion2b_s34b_b82k_augreg_rewind", "LAION-2B"),
    ("convnext_xxlarge", "laion2b_s34b_b82k_augreg_soup", "LAION-2B"),
    ("convnext_base_w", "laion_aesthetic_s13b_b82k", "LAION-Aesthetic"),
    ("convnext_base_w_320", "laion_aesthetic_s13b_b82k", "LAION-Aesthetic"),
    ("convnext_base_w_320", "laion_aesthetic_s13b_b82k_augreg", "LAION-Aesthetic"),
    ("ViT-B-32", "datacomp_s_s13m_b4k", "DataComp-S"),
    ("ViT-B-32", "datacomp_m_s128m_b4k", "DataComp-M"),
    ("ViT-B-16", "datacomp_l_s1b_b8k", "DataComp-L"),
    ("ViT-L-14", "datacomp_xl_s13b_b90k", "DataComp-1B"),
    ("EVA01-g-14", "laion400m_s11b_b41k", "LAION-400M"),
    ("EVA01-g-14-plus", "merged2b_s11b_b114k", "Merged-2B"),
    ("EVA02-B-16", "merged2b_s8b_b131k", "Merged-2B"),
    ("EVA02-L-14", "merged2b_s4b_b131k", "Merged-2B"),
    ("EVA02-L-14-336", "merged2b_s6b_b61k", "Merged-2B"),
    ("EVA02-E-14", "laion2b_s4b_b115k", "LAION-2B"),
    ("EVA02-E-14-plus", "laion2b_s9b_b144k", "LAION-2B"),
]

# --------------------------------------------------------------------------- 32 CLIP fine-tuned on ImageNet (timm)
# Dropped from the 33 candidates of the model survey: convnext_base.clip_laiona_augreg_ft_in1k_384, the only
# CLIP-FT model pretrained on LAION-Aesthetic (a one-point group in every by-source plot).
_VIT_CLIP_FT = {
    "laion2b_ft_in12k_in1k": [
        "vit_base_patch32_clip_224",
        "vit_base_patch32_clip_384",
        "vit_base_patch32_clip_448",
        "vit_base_patch16_clip_224",
        "vit_base_patch16_clip_384",
        "vit_large_patch14_clip_224",
        "vit_large_patch14_clip_336",
        "vit_huge_patch14_clip_224",
        "vit_huge_patch14_clip_336",
    ],
    "laion2b_ft_in1k": [
        "vit_base_patch32_clip_224",
        "vit_base_patch16_clip_224",
        "vit_base_patch16_clip_384",
        "vit_large_patch14_clip_224",
        "vit_large_patch14_clip_336",
        "vit_huge_patch14_clip_224",
    ],
    "openai_ft_in12k_in1k": [
        "vit_base_patch32_clip_384",
        "vit_base_patch16_clip_224",
        "vit_base_patch16_clip_384",
        "vit_large_patch14_clip_224",
        "vit_large_patch14_clip_336",
    ],
    "openai_ft_in1k": [
        "vit_base_patch32_clip_224",
        "vit_base_patch16_clip_224",
        "vit_base_patch16_clip_384",
        "vit_large_patch14_clip_224",
    ],
}
CLIP_FT: list[str] = [f"{arch}.{tag}" for tag, archs in _VIT_CLIP_FT.items() for arch in archs] + [
    "convnext_base.clip_laion2b_augreg_ft_in1k",
    "convnext_base.clip_laion2b_augreg_ft_in12k_in1k",
    "convnext_base.clip_laion2b_augreg_ft_in12k_in1k_384",
    "convnext_large_mlp.clip_laion2b_augreg_ft_in1k",
    "convnext_large_mlp.clip_laion2b_augreg_ft_in1k_384",
    "convnext_large_mlp.clip_laion2b_soup_ft_in12k_in1k_320",
    "convnext_large_mlp.clip_laion2b_soup_ft_in12k_in1k_384",
    "convnext_xxlarge.clip_laion2b_soup_ft_in1k",
]

# --------------------------------------------------------------------------- 127 ImageNet classifiers (timm)
# "standard": trained on ImageNet-1k only (no distillation, no adversarial training).
STANDARD: list[str] = """
resnet18.tv_in1k resnet34.tv_in1k resnet101.tv_in1k resnet152.tv_in1k
resnet50.a1_in1k resnet50d.ra2_in1k resnet101d.ra2_in1k resnet26d.bt_in1k
resnetrs50.tf_in1k resnetrs101.tf_in1k
resnext50_32x4d.tv_in1k resnext101_32x8d.tv_in1k
wide_resnet50_2.tv_in1k wide_resnet101_2.tv_in1k
densenet121.tv_in1k densenet161.tv_in1k densenet201.tv_in1k
vgg16.tv_in1k vgg19_bn.tv_in1k
inception_v3.tv_in1k inception_v4.tf_in1k inception_resnet_v2.tf_in1k legacy_xception.tf_in1k
efficientnet_b0.ra_in1k efficientnet_b2.ra_in1k efficientnet_b3.ra2_in1k
tf_efficientnet_b0.in1k tf_efficientnet_b4.in1k
tf_efficientnetv2_s.in1k tf_efficientnetv2_m.in1k tf_efficientnetv2_l.in1k
mobilenetv2_100.ra_in1k mobilenetv3_large_100.ra_in1k tf_mobilenetv3_large_100.in1k
regnetx_002.pycls_in1k regnetx_016.pycls_in1k regnetx_320.pycls_in1k
regnety_002.pycls_in1k regnety_016.pycls_in1k regnety_320.pycls_in1k
convnext_tiny.fb_in1k convnext_small.fb_in1k convnext_base.fb_in1k convnext_large.fb_in1k
deit_tiny_patch16_224.fb_in1k deit_small_patch16_224.fb_in1k deit_base_patch16_224.fb_in1k
deit3_small_patch16_224.fb_in1k deit3_base_patch16_224.fb_in1k
vit_base_patch16_224.augreg_in1k vit_base_patch16_224.sam_in1k
swin_tiny_patch4_window7_224.ms_in1k swin_small_patch4_window7_224.ms_in1k swin_base_patch4_window7_224.ms_in1k
resmlp_12_224.fb_in1k resmlp_24_224.fb_in1k gmlp_s16_224.ra3_in1k
xcit_small_12_p16_224.fb_in1k twins_svt_base.in1k convmixer_768_32.in1k convit_base.fb_in1k visformer_small.in1k
dm_nfnet_f0.dm_in1k eca_nfnet_l0.ra2_in1k dla34.in1k
res2net50_26w_4s.in1k resnest50d.in1k rexnet_100.nav_in1k ghostnet_100.in1k
cspdarknet53.ra_in1k repvgg_b0.rvgg_in1k seresnext50_32x4d.racm_in1k
""".split()

# "more_data": pretrained beyond ImageNet-1k (IN-21k/22k, IG-1B, YFCC-100M, JFT-300M), then ImageNet-1k.
MORE_DATA: list[str] = """
vit_tiny_patch16_224.augreg_in21k_ft_in1k vit_small_patch16_224.augreg_in21k_ft_in1k
vit_small_patch32_224.augreg_in21k_ft_in1k vit_base_patch16_224.augreg_in21k_ft_in1k
vit_base_patch32_224.augreg_in21k_ft_in1k vit_base_patch16_384.augreg_in21k_ft_in1k
vit_large_patch16_224.augreg_in21k_ft_in1k vit_large_patch16_384.augreg_in21k_ft_in1k
vit_base_patch8_224.augreg_in21k_ft_in1k vit_small_r26_s32_224.augreg_in21k_ft_in1k
vit_base_r50_s16_384.orig_in21k_ft_in1k
swin_base_patch4_window7_224.ms_in22k_ft_in1k swin_large_patch4_window7_224.ms_in22k_ft_in1k
swin_base_patch4_window12_384.ms_in22k_ft_in1k swin_large_patch4_window12_384.ms_in22k_ft_in1k
convnext_tiny.fb_in22k_ft_in1k convnext_small.fb_in22k_ft_in1k convnext_base.fb_in22k_ft_in1k
convnext_large.fb_in22k_ft_in1k convnext_xlarge.fb_in22k_ft_in1k
resnetv2_50x1_bit.goog_in21k_ft_in1k resnetv2_50x3_bit.goog_in21k_ft_in1k resnetv2_101x1_bit.goog_in21k_ft_in1k
resnetv2_101x3_bit.goog_in21k_ft_in1k resnetv2_152x2_bit.goog_in21k_ft_in1k
resnext101_32x8d.fb_wsl_ig1b_ft_in1k resnext101_32x16d.fb_wsl_ig1b_ft_in1k
resnet18.fb_swsl_ig1b_ft_in1k resnet50.fb_swsl_ig1b_ft_in1k resnext50_32x4d.fb_swsl_ig1b_ft_in1k
resnext101_32x4d.fb_swsl_ig1b_ft_in1k resnext101_32x8d.fb_swsl_ig1b_ft_in1k resnext101_32x16d.fb_swsl_ig1b_ft_in1k
resnet18.fb_ssl_yfcc100m_ft_in1k resnet50.fb_ssl_yfcc100m_ft_in1k resnext50_32x4d.fb_ssl_yfcc100m_ft_in1k
resnext101_32x4d.fb_ssl_yfcc100m_ft_in1k resnext101_32x8d.fb_ssl_yfcc100m_ft_in1k
resnext101_32x16d.fb_ssl_yfcc100m_ft_in1k
tf_efficientnet_b0.ns_jft_in1k tf_efficientnet_b1.ns_jft_in1k tf_efficientnet_b2.ns_jft_in1k
tf_efficientnet_b3.ns_jft_in1k tf_efficientnet_b4.ns_jft_in1k tf_efficientnet_b5.ns_jft_in1k
tf_efficientnet_b6.ns_jft_in1k tf_efficientnet_b7.ns_jft_in1k
tf_efficientnetv2_s.in21k_ft_in1k tf_efficientnetv2_m.in21k_ft_in1k tf_efficientnetv2_l.in21k_ft_in1k
beit_base_patch16_224.in22k_ft_in22k_in1k
deit3_base_patch16_224.fb_in22k_ft_in1k deit3_large_patch16_224.fb_in22k_ft_in1k
mixer_b16_224.goog_in21k_ft_in1k mixer_b16_224.miil_in21k_ft_in1k
""".split()

# timm tag (pattern) -> (training source, fine-tuning route after that source).
_TIMM_TAG_RULES: list[tuple[str, str, str]] = [
    (r"(^|_)openai_ft_in12k_in1k$", "WIT-400M", "in12k->in1k"),
    (r"(^|_)openai_ft_in1k$", "WIT-400M", "in1k"),
    (r"laion2b_.*ft_in12k_in1k(_\d+)?$", "LAION-2B", "in12k->in1k"),
    (r"laion2b_.*ft_in1k(_\d+)?$", "LAION-2B", "in1k"),
    (r"in22k_ft_in22k_in1k$", "ImageNet-21k", "in22k->in1k"),
    (r"in21k_ft_in1k$", "ImageNet-21k", "in1k"),
    (r"in22k_ft_in1k$", "ImageNet-21k", "in1k"),
    (r"fb_w?sl_ig1b_ft_in1k$", "IG-1B", "in1k"),
    (r"fb_swsl_ig1b_ft_in1k$", "IG-1B", "in1k"),
    (r"fb_ssl_yfcc100m_ft_in1k$", "YFCC-100M", "in1k"),
    (r"ns_jft_in1k$", "JFT-300M", "in1k"),
    (r"in1k$", "ImageNet-1k", "none"),
]

# Pretraining data in timm's model_metadata-in1k.csv -> our group.
_METADATA_GROUP = {
    "in1k": "standard",
    "in21k": "more_data",
    "in21k-selfsl": "more_data",
    "ig1b-wsl": "more_data",
    "ig1b-swsl": "more_data",
    "yfc-semisl": "more_data",
    "jft300m-ns": "more_data",
    "in1k-adv": "adversarial",
    "in1k-ap": "adversarial",
    "in1k-dist": "distilled",
}

# Architecture name (open_clip config or timm model) -> family; first match wins.
_FAMILY_RULES: list[tuple[str, str]] = [
    (r"^(RN\d|resnetrs|resnet\d|resnet\d+d|wide_resnet|resnext|seresnext|res2net|resnest)", "ResNet"),
    (r"^resnetv2_.*_bit", "BiT"),
    (r"^(EVA|eva)", "EVA"),
    (r"^(ViT-|vit_)", "ViT"),
    (r"^(deit3?_)", "DeiT"),
    (r"^beit_", "BEiT"),
    (r"^swin_", "Swin"),
    (r"^convnext", "ConvNeXt"),
    (r"^(tf_)?efficientnetv2_", "EfficientNetV2"),
    (r"^(tf_)?efficientnet_", "EfficientNet"),
    (r"^(tf_)?mobilenetv[23]", "MobileNet"),
    (r"^regnet", "RegNet"),
    (r"^densenet", "DenseNet"),
    (r"^vgg", "VGG"),
    (r"^(inception|legacy_xception)", "Inception"),
    (r"^(mixer|resmlp|gmlp)", "MLP-Mixer"),
    (r"^(dm_nfnet|eca_nfnet)", "NFNet"),
    (r"^xcit", "XCiT"),
    (r"^twins", "Twins"),
    (r"^convmixer", "ConvMixer"),
    (r"^convit", "ConViT"),
    (r"^visformer", "Visformer"),
    (r"^dla", "DLA"),
    (r"^rexnet", "ReXNet"),
    (r"^ghostnet", "GhostNet"),
    (r"^cspdarknet", "CSPDarkNet"),
    (r"^repvgg", "RepVGG"),
]


def architecture_family(architecture: str) -> str:
    """The family an architecture belongs to (ResNet, ViT, ConvNeXt, ...), from its name."""
    for pattern, family in _FAMILY_RULES:
        if re.search(pattern, architecture):
            return family
    raise ValueError(f"no architecture family rule matches {architecture!r}: add one to _FAMILY_RULES")


def timm_source_and_route(tag: str) -> tuple[str, str]:
    """(training source, fine-tuning route) of a timm pretrained tag such as 'laion2b_ft_in12k_in1k'."""
    for pattern, source, route in _TIMM_TAG_RULES:
        if re.search(pattern, tag):
            return source, route
    raise ValueError(f"no training-source rule matches the timm tag {tag!r}: add one to _TIMM_TAG_RULES")


def open_clip_rows() -> list[dict]:
    """The 51 zero-shot rows, with the -quickgelu config wherever open_clip marks the tag quick_gelu."""
    import open_clip

    rows = []
    for base, tag, source in CLIP_ZEROSHOT:
        cfg = open_clip.get_pretrained_cfg(base, tag)
        if not cfg:
            raise SystemExit(f"open_clip {open_clip.__version__} has no pretrained ({base!r}, {tag!r})")
        arch = f"{base}-quickgelu" if cfg.get("quick_gelu", False) else base
        size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
        rows.append(
            dict(
                library="open_clip",
                architecture=arch,
                pretrained=tag,
                group="clip_zeroshot",
                training_source=source,
                training_size=TRAINING_SIZES[source],
                finetune_route="none",
                architecture_family=architecture_family(base),
                resolution=int(size if isinstance(size, int) else size[-1]),
            )
        )
    return rows


def timm_rows(names: list[str], group: str) -> list[dict]:
    """Rows for timm 'arch.tag' names; resolution from the tag's pretrained config."""
    import timm

    rows = []
    for name in names:
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None:
            raise SystemExit(f"timm {timm.__version__} has no pretrained {name!r}")
        arch, tag = name.split(".", 1)
        source, route = timm_source_and_route(tag)
        rows.append(
            dict(
                library="timm",
                architecture=arch,
                pretrained=tag,
                group=group,
                training_source=source,
                training_size=TRAINING_SIZES[source],
                finetune_route=route,
                architecture_family=architecture_family(arch),
                resolution=int(cfg.input_size[-1]),
            )
        )
    return rows


def check_against_timm_metadata(rows: list[dict], metadata_csv: Path) -> list[str]:
    """Disagreements between our group and timm's published pretraining data (old names mapped by timm)."""
    from timm.models._registry import _deprecated_models

    metadata = pd.read_csv(metadata_csv)
    published = {}
    for old, pretrain in zip(metadata["model"], metadata["pretrain"]):
        new = _deprecated_models.get(old)
        if new:
            published[new] = pretrain
    problems = []
    for row in rows:
        name = f"{row['architecture']}.{row['pretrained']}"
        if name in published and _METADATA_GROUP.get(published[name]) != row["group"]:
            problems.append(f"{name}: group {row['group']!r} but timm's metadata says pretrain={published[name]!r}")
    return problems


def build_registry(metadata_csv: Path) -> pd.DataFrame:
    """The full registry table, columns in MODEL_COLUMNS order (no ``study`` column: every row is the paper's)."""
    rows = (
        open_clip_rows()
        + timm_rows(CLIP_FT, "clip_ft")
        + timm_rows(STANDARD, "standard")
        + timm_rows(MORE_DATA, "more_data")
    )
    for row in rows:
        if row["group"] in ("standard", "more_data"):
            expected = "standard" if row["training_source"] == "ImageNet-1k" else "more_data"
            if row["group"] != expected:
                raise SystemExit(
                    f"{row['architecture']}.{row['pretrained']}: listed as {row['group']} "
                    f"but its tag says {row['training_source']}"
                )
    problems = check_against_timm_metadata(rows, metadata_csv)
    if problems:
        raise SystemExit("registry disagrees with timm's model metadata:\n  " + "\n  ".join(problems))
    for row in rows:
        row["model_id"] = model_id_for(row["library"], row["architecture"], row["pretrained"])
        row["weights_file"] = ""
    return pd.DataFrame(rows)[list(MODEL_COLUMNS)]


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=root / "config" / "models.tsv")
    parser.add_argument(
        "--timm-metadata", type=Path, default=root / "config" / "reference" / "timm-model_metadata-in1k.csv"
    )
    args = parser.parse_args(argv)
    table = build_registry(args.timm_metadata)
    table.to_csv(args.out, sep="\t", index=False)
    print(
        f"wrote {len(table)} models to {args.out}: "
        + ", ".join(f"{group} {n}" for group, n in table["group"].value_counts(sort=False).items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
