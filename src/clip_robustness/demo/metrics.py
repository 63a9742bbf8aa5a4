"""Synthetic model registries and tidy metric tables with plausible values, for tests and benchmarks.

Nothing here is a result: the numbers are drawn from a seeded generator so that figures can be
rendered at the study's full scale (210 models x every dataset) without any cached logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from clip_robustness.figures.data import FACTORS, ID_TEST_HALF, IMAGENET_VAL, IMAGENET_X
from clip_robustness.metrics.aggregate import imagenet_c_mean_rows
from clip_robustness.models.adapters.open_clip import OpenClipAdapter
from clip_robustness.models.adapters.timm import TimmAdapter
from clip_robustness.models.registry import MODEL_COLUMNS
from clip_robustness.names import imagenet_c_dataset_ids

#: The study's group sizes (docs/methods.md, "The study"): 51 zero-shot CLIP, 32 CLIP-FT, 127 ImageNet classifiers.
STUDY_GROUP_COUNTS: dict[str, int] = {"clip_zeroshot": 51, "clip_ft": 32, "standard": 87, "more_data": 40}
CLIP_SOURCES: tuple[str, ...] = (
    "WIT-400M",
    "YFCC-15M",
    "CC12M",
    "LAION-400M",
    "LAION-2B",
    "LAION-Aesthetic",
    "DataComp",
    "Merged-2B",
)
TEST_CONDITIONS: tuple[str, ...] = (
    "imagenet_v2_threshold07",
    "imagenet_v2_matched_frequency",
    "imagenet_v2_top_images",
    "imagenet_sketch",
    "imagenet_r",
    "imagenet_a",
    "objectnet",
)
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
CLIP_ARCHITECTURES: tuple[str, ...] = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50")
TIMM_ARCHITECTURES: tuple[str, ...] = ("resnet50", "vit_base_patch16_224", "convnext_tiny")
OOD_SETS: tuple[str, ...] = ("inaturalist", "sun", "places", "textures", "imagenet_o")


def synthetic_registry(counts: dict[str, int] | None = None, *, seed: int = 0) -> pd.DataFrame:
    """A model registry table (the columns and value rules of config/models.tsv) with ``counts[group]`` rows per group.

    Default counts: the study's 210 models. Model ids are ``{group}_{i:03d}``; zero-shot CLIP models
    cycle through :data:`CLIP_SOURCES`.
    """
    counts = dict(STUDY_GROUP_COUNTS if counts is None else counts)
    rng = np.random.default_rng(seed)
    rows = []
    for group, n in counts.items():
        for i in range(n):
            clip = group.startswith("clip")
            source = (
                CLIP_SOURCES[i % len(CLIP_SOURCES)]
                if clip
                else ("ImageNet-1k" if group == "standard" else "ImageNet-21k")
            )
            rows.append(
                {
                    "model_id": f"{group}_{i:03d}",
                    "library": OpenClipAdapter.name if group == "clip_zeroshot" else TimmAdapter.name,
                    "architecture": str(rng.choice(CLIP_ARCHITECTURES if clip else TIMM_ARCHITECTURES)),
                    "pretrained": f"tag{i}",
                    "group": group,
                    "training_source": source,
                    "training_size": int(rng.choice([15_000_000, 400_000_000, 2_000_000_000])) if clip else 1_281_167,
                    "finetune_route": {
                        "clip_zeroshot": "none",
                        "clip_ft": "in12k->in1k" if i % 2 else "in1k",
                        "standard": "none",
                    }.get(group, "in1k"),
                    "architecture_family": "ViT" if i % 2 else "ResNet",
                    "resolution": int(rng.choice([224, 336, 384])),
                    "weights_file": "",
                }
            )
    return pd.DataFrame(rows, columns=list(MODEL_COLUMNS))


# Longer than 60 lines: one synthetic row family per metric of the tidy table, drawn side by side so one seed fixes all.
def synthetic_metrics(
    registry: pd.DataFrame,
    *,
    test_conditions: Sequence[str] = TEST_CONDITIONS,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    ood_sets: Sequence[str] = OOD_SETS,
    factors: Sequence[str] = FACTORS,
    seed: int = 0,
    cue_conflict: Sequence[str] = (),
) -> pd.DataFrame:
    """A tidy metrics table (columns model, dataset, metric, value, factor, score) for every registry model.

    Units follow the contract: accuracies, AUROC and FPR@95 are fractions, ECE is percent, NLL nats.
    Each model gets an ImageNet accuracy in [0.55, 0.88]; other values follow from it with noise.
    ``cue_conflict``: datasets given shape-bias rows (drawn from their own generator, so the other rows are the same
    with or without them).
    """
    rng = np.random.default_rng(seed)
    conditions = [ID_TEST_HALF, *test_conditions, *imagenet_c_dataset_ids(list(corruptions), list(severities))]
    records: list[tuple] = []
    for model, group in zip(registry["model_id"], registry["group"]):
        clip = group == "clip_zeroshot"
        acc = rng.uniform(0.55, 0.88)
        temperature = rng.uniform(0.8, 1.6)
        records.append((model, IMAGENET_VAL, "top1", acc, None, None))
        records.append((model, IMAGENET_VAL, "temperature", temperature, None, None))
        for dataset in conditions:
            drop = 0.0 if dataset == ID_TEST_HALF else rng.uniform(0.05, 0.45) * (0.6 if clip else 1.0)
            a = float(np.clip(acc - drop + rng.normal(0, 0.01), 0.01, 0.99))
            ece = abs(rng.normal(3 + 20 * drop, 2))
            nll = -np.log(a) * rng.uniform(0.9, 1.3)
            records += [
                (model, dataset, "top1", a, None, None),
                (model, dataset, "ece", ece, None, None),
                (model, dataset, "nll", nll, None, None),
                (model, dataset, "ece_ts", ece * rng.uniform(0.3, 0.9), None, None),
                (model, dataset, "nll_ts", nll * rng.uniform(0.85, 1.0), None, None),
            ]
        for dataset in ood_sets:
            for score in ("msp", "max_logit") + (("mcm",) if clip else ()):
                auroc = float(np.clip(0.5 + 0.45 * acc + rng.normal(0, 0.03), 0.5, 0.999))
                records += [
                    (model, dataset, "auroc", auroc, None, score),
                    (
                        model,
                        dataset,
                        "fpr95",
                        float(np.clip(1.6 - 1.4 * auroc + rng.normal(0, 0.03), 0.01, 1.0)),
                        None,
                        score,
                    ),
                ]
        acc_x = float(np.clip(acc + 0.03, 0.01, 0.99))
        records.append((model, IMAGENET_X, "top1", acc_x, None, None))
        for factor in factors:
            acc_f = float(np.clip(acc_x - rng.uniform(0.0, 0.3) + (0.05 if clip else 0.0), 0.01, 0.99))
            records += [
                (model, IMAGENET_X, "factor_accuracy", acc_f, factor, None),
                (model, IMAGENET_X, "error_ratio", (1 - acc_f) / (1 - acc_x), factor, None),
                (model, IMAGENET_X, "effective_robustness", acc_f - (acc_x - 0.15), factor, None),
            ]
    shape_rng = np.random.default_rng([seed, 10])
    for model, group in zip(registry["model_id"], registry["group"]):
        for dataset in cue_conflict:
            shape = shape_rng.uniform(0.1, 0.45) + (0.15 if group == "clip_zeroshot" else 0.0)
            texture = shape_rng.uniform(0.3, 0.9) * (1.0 - shape)
            records += [
                (model, dataset, "shape_bias", shape / (shape + texture), None, None),
                (model, dataset, "shape_fraction", shape, None, None),
                (model, dataset, "texture_fraction", texture, None, None),
                (model, dataset, "n_cue_conflict", 1000.0, None, None),  # a stand-in count
            ]
    table = pd.DataFrame.from_records(records, columns=["model", "dataset", "metric", "value", "factor", "score"])
    table = table.astype({"value": float})
    # the ImageNet-C condition (mean over corruptions and severities), as the aggregate rule adds it
    extra = imagenet_c_mean_rows(table).astype(object).astype({"value": float})
    extra = extra.where(extra.notna(), None)
    return pd.concat([table, extra], ignore_index=True).astype({"value": float}) if len(extra) else table
