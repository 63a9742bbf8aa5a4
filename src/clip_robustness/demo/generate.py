"""The embedded demo: generated datasets in the real on-disk layouts and tiny trained models.

``python -m clip_robustness.demo data/demo/upstream`` plays the part of the internet for the demo:
it writes real archives (in the layouts of ImageNet val, ImageNet-V2, ImageNet-R, ImageNet-A,
two OOD sets and model-vs-human's cue-conflict stimuli, :mod:`clip_robustness.demo.cue_conflict`), a dataset registry with their ``file://`` URLs and sha256, and local weight files of
three timm classifiers, one tiny open_clip model and one model of one's own (``python`` adapter,
:mod:`clip_robustness.demo.models`) trained for a few seconds on generated images.
The pipeline then obtains all of it through its ordinary download, checksum and local-weights
paths (``config/demo.yaml``).

Images are drawn per class: a class has a hue and a stripe orientation and frequency. The shifted
sets keep the stripes and perturb the rest (noise, hue, occlusion, grey scale), so accuracy drops
under shift by different amounts per model and the OOD sets (no stripes of any class) are
separable from ImageNet val by confidence: the demo's figures show real variation, not noise.
"""

from __future__ import annotations

import argparse
import colorsys
import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SIZE = 64
N_DEMO_CLASSES = 10

#: Image domains: clean ImageNet-like renders, and the perturbations that stand in for each shift.
DOMAINS = ("clean", "v2", "rendition", "adversarial", "sketch", "ood_texture", "ood_scene")


def demo_classes(n_classes: int = N_DEMO_CLASSES) -> list[int]:
    """ImageNet-1k indices of the demo classes: evenly spaced over the classes that are in both the
    ImageNet-A and the ImageNet-R 200-class subsets (timm's shipped files), so every demo set applies."""
    from clip_robustness.datasets.label_spaces import imagenet_a_indices, imagenet_r_indices

    shared = sorted(set(imagenet_a_indices()) & set(imagenet_r_indices()))
    positions = np.linspace(0, len(shared) - 1, n_classes).round().astype(int)
    return [shared[p] for p in positions]


def _class_style(label: int, classes: Sequence[int]) -> tuple[float, float, float]:
    """(hue in [0, 1), stripe angle in radians, stripe frequency in cycles per image) of a class."""
    k = list(classes).index(label)
    n = len(classes)
    return k / n, np.pi * ((k * 3) % n) / n, 2.0 + (k % 3)


def render_image(label: int, rng: np.random.Generator, *, classes: Sequence[int], domain: str) -> Image.Image:
    """One RGB image of class ``label`` (ImageNet-1k index; -1 for OOD domains) in ``domain``."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown demo domain {domain!r}; known: {DOMAINS}")
    size = IMAGE_SIZE
    yy, xx = np.mgrid[0:size, 0:size] / size
    if domain.startswith("ood"):
        if domain == "ood_texture":  # checkerboards and dots of random colours: no class stripes
            cells = rng.integers(3, 9)
            board = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2)[..., None]
            c1, c2 = rng.random(3), rng.random(3)
            rgb = board * c1 + (1 - board) * c2
        else:  # smooth scene-like gradients
            corners = rng.random((2, 2, 3))
            rgb = (
                corners[0, 0] * ((1 - xx) * (1 - yy))[..., None]
                + corners[0, 1] * (xx * (1 - yy))[..., None]
                + corners[1, 0] * ((1 - xx) * yy)[..., None]
                + corners[1, 1] * (xx * yy)[..., None]
            )
        rgb = rgb + rng.normal(0, 0.05, rgb.shape)
    else:
        hue, angle, freq = _class_style(label, classes)
        hue_jitter = {"clean": 0.02, "v2": 0.04, "rendition": 0.25, "adversarial": 0.04, "sketch": 0.0}[domain]
        noise = {"clean": 0.06, "v2": 0.1, "rendition": 0.06, "adversarial": 0.25, "sketch": 0.06}[domain]
        hue = (hue + rng.normal(0, hue_jitter)) % 1.0
        angle = angle + rng.normal(0, 0.08)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        base = np.array(colorsys.hsv_to_rgb(hue, 0.75, 0.85))
        rgb = stripes[..., None] * base + (1 - stripes[..., None]) * base * 0.25
        if domain == "rendition":  # posterised, like a cartoon or a painting
            rgb = np.round(rgb * 3) / 3
        if domain == "adversarial":  # an occluder of a random colour
            x0, y0 = rng.integers(0, size // 2, 2)
            rgb[y0 : y0 + size // 2, x0 : x0 + size // 2] = rng.random(3)
        rgb = rgb + rng.normal(0, noise, rgb.shape)
        if domain == "sketch":
            rgb = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2)
    pixels = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def renderer(domain: str, classes: Sequence[int]) -> Callable[[int, np.random.Generator], Image.Image]:
    """``render(label, rng) -> PIL image`` for one domain, as the synthetic archive writers take it."""
    return partial(render_image, classes=tuple(classes), domain=domain)


# ----------------------------------------------------------------------------- tiny trained models


#: The demo model registry (committed): which models to train and where their weights go.
DEMO_MODEL_REGISTRY = Path("config/demo/models.tsv")

#: Images per class in the demo's ImageNet val (real val file names of the demo classes).
DEMO_VAL_IMAGES_PER_CLASS = 30

#: Textures of the demo's DTD archive (real DTD category names).
DEMO_TEXTURES = ("banded", "chequered", "dotted", "grid", "zigzagged")


def _train_on_clean_images(
    name: str,
    model,
    logits_of: Callable,
    transform: Callable,
    params: Sequence,
    classes: Sequence[int],
    steps: int,
    seed: int,
    lr: float,
    weight_decay: float,
) -> None:
    """AdamW on ``params`` for ``steps`` batches of 32 clean demo images, cross-entropy of
    ``logits_of(images)`` (1000 ImageNet classes) against the images' ImageNet labels."""
    import torch

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    model.train()
    for step in range(steps):
        labels = rng.choice(classes, size=32)
        images = torch.stack([transform(render_image(int(y), rng, classes=classes, domain="clean")) for y in labels])
        loss = torch.nn.functional.cross_entropy(logits_of(images), torch.as_tensor(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            log.info("%s step %d loss %.3f", name, step, loss.item())


def train_timm_classifier(architecture: str, classes: Sequence[int], steps: int, seed: int) -> dict:
    """Train a timm test model for ``steps`` AdamW steps on clean demo images; returns its state dict."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False, num_classes=1000)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    _train_on_clean_images(
        architecture,
        model,
        model,
        transform,
        list(model.parameters()),
        classes,
        steps,
        seed,
        lr=2e-3,
        weight_decay=0.01,
    )
    return model.state_dict()


def train_open_clip_image_tower(architecture: str, classes: Sequence[int], steps: int, seed: int) -> dict:
    """Train the image tower of a tiny random-weight open_clip model against the zero-shot head the
    pipeline itself builds (open_clip's 1000 ImageNet class names x the 80 OpenAI templates, text
    tower frozen), on clean demo images, with cross-entropy over all 1000 classes.

    Returns the full CLIP state dict (text tower unchanged), for the pipeline's local-weights path:
    the pipeline's ``build_zero_shot_head`` then rebuilds the very head trained against.
    """
    import open_clip
    import torch

    from clip_robustness.models.adapters.open_clip import register_open_clip_configs
    from clip_robustness.models.adapters.open_clip_head import build_zero_shot_head
    from clip_robustness.models.adapters.text_head import zero_shot_logits

    register_open_clip_configs()
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=None)
    model.eval()
    head = build_zero_shot_head(model, open_clip.get_tokenizer(architecture), architecture, prompt_set="openai").weights
    for p in model.parameters():
        p.requires_grad_(False)
    params = [*model.visual.parameters(), model.logit_scale]
    for p in params:
        p.requires_grad_(True)

    def logits_of(images):
        return zero_shot_logits(model.encode_image(images), head, model.logit_scale.exp())

    _train_on_clean_images(
        architecture, model, logits_of, preprocess, params, classes, steps, seed, lr=1e-2, weight_decay=0.0
    )
    return model.state_dict()


def train_python_model(architecture: str, classes: Sequence[int], steps: int, seed: int) -> dict:
    """Train a ``python``-adapter model (``pkg.module:function``) for ``steps`` AdamW steps on clean demo images;
    returns its state dict."""
    import torch

    from clip_robustness.models.adapters.python import resolve_factory

    torch.manual_seed(seed)
    model, transform = resolve_factory(architecture)()
    _train_on_clean_images(
        architecture,
        model,
        model,
        transform,
        list(model.parameters()),
        classes,
        steps,
        seed,
        lr=3e-3,
        weight_decay=0.01,
    )
    return model.state_dict()


#: How each demo architecture is trained, and for how many AdamW steps (a few seconds each on 2 cores).
#: Different budgets give different accuracies, so the demo's accuracy axes are not a single point.
DEMO_TRAINING: dict[str, tuple[Callable[[str, Sequence[int], int, int], dict], int]] = {
    "test_resnet": (train_timm_classifier, 40),
    "test_convnext": (train_timm_classifier, 25),
    "test_vit": (train_timm_classifier, 120),
    "clip_tiny_demo": (train_open_clip_image_tower, 200),
    "clip_robustness.demo.models:tiny_convnet": (train_python_model, 40),
}


def save_state_dict(state_dict: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def write_demo_archives(out: Path, classes: Sequence[int], seed: int) -> Path:
    """Write the demo's archives in their real layouts and a dataset registry naming them by
    ``file://`` URL and sha256; returns the registry path (``out/datasets.yaml``)."""
    from clip_robustness.datasets.manifest import imagenet_val_labels
    from clip_robustness.demo import archives as synthetic

    archive_dir = out / "archives"
    val_labels = imagenet_val_labels()
    val_files = synthetic.imagenet_val_file_names(classes, DEMO_VAL_IMAGES_PER_CLASS)
    archives = [
        synthetic.write_imagenet_val_tar(
            archive_dir, classes, DEMO_VAL_IMAGES_PER_CLASS, renderer("clean", classes), seed=seed + 1
        ),
        # The official devkit's labels, cross-checked by the manifest step against imagenet-x's.
        synthetic.write_imagenet_devkit_tar(archive_dir, {name: val_labels[name] for name in val_files}, seed=seed),
        synthetic.write_imagenet_v2_tar(
            archive_dir, "threshold0.7", classes, 10, renderer("v2", classes), seed=seed + 2
        ),
        synthetic.write_imagenet_sketch_zip(archive_dir, classes, 10, renderer("sketch", classes), seed=seed + 3),
        synthetic.write_hendrycks_tar(
            archive_dir, "imagenet-r", classes, 10, renderer("rendition", classes), seed=seed + 4
        ),
        synthetic.write_hendrycks_tar(
            archive_dir, "imagenet-a", classes, 10, renderer("adversarial", classes), seed=seed + 5
        ),
        synthetic.write_dtd_tar(archive_dir, DEMO_TEXTURES, 12, renderer("ood_texture", classes), seed=seed + 6),
        synthetic.write_mos_ood_tar(archive_dir, "iNaturalist", 60, renderer("ood_scene", classes), seed=seed + 7),
    ]
    datasets = synthetic.registry_datasets(
        "imagenet_val",
        "imagenet_v2_threshold07",
        "imagenet_sketch",
        "imagenet_r",
        "imagenet_a",
        "textures",
        "inaturalist",
        with_devkit=True,
    )
    for entry in datasets.values():
        entry.pop("n_images", None)  # the real sets' sizes; the demo's are smaller
    archives.append(_write_demo_cue_conflict(out, classes, seed + 8, datasets))
    entries = {
        path.name: synthetic.archive_entry(path, user_supplied=False, source="generated by clip_robustness.demo")
        for path in archives
    }
    return synthetic.write_dataset_registry(out / "datasets.yaml", entries, datasets)


def _write_demo_cue_conflict(out: Path, classes: Sequence[int], seed: int, datasets: dict) -> Path:
    """The cue-conflict archive and the demo's category mapping (:mod:`clip_robustness.demo.cue_conflict`); adds the
    ``cue_conflict`` entry to ``datasets``."""
    from clip_robustness.demo import cue_conflict

    mapping = cue_conflict.demo_category_mapping(classes)
    mapping_path = cue_conflict.write_category_mapping(mapping, out / cue_conflict.DEMO_MAPPING_FILE)
    datasets["cue_conflict"] = cue_conflict.demo_registry_entry(mapping_path)
    return cue_conflict.write_cue_conflict_tar(out / "archives", mapping, 1, seed, IMAGE_SIZE)


def train_demo_models(registry_path: Path, classes: Sequence[int], seed: int) -> list[Path]:
    """Train every model of the demo registry and save it at its ``weights_file``."""
    import pandas as pd

    written = []
    for k, row in enumerate(pd.read_csv(registry_path, sep="\t").itertuples()):
        train, steps = DEMO_TRAINING[row.architecture]
        log.info("training %s (%s) for %d steps", row.model_id, row.architecture, steps)
        state = train(row.architecture, classes, steps, seed + k)
        written.append(save_state_dict(state, Path(row.weights_file)))
    return written


def generate_demo(out: Path, seed: int = 0, registry_path: Path = DEMO_MODEL_REGISTRY) -> Path:
    """Everything the demo fetches: archives + dataset registry under ``out``, and the weights named
    in the demo model registry. Deterministic for a seed. Returns the dataset registry's path."""
    classes = demo_classes()
    log.info("demo classes (ImageNet-1k indices): %s", classes)
    registry = write_demo_archives(out, classes, seed)
    train_demo_models(registry_path, classes, seed)
    return registry


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder that plays the upstream servers (archives, registry, weights)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    generate_demo(args.out, seed=args.seed)
