"""The demo's cue-conflict stimuli: images with the "shape" of one demo class and the "texture" of another, in the
real archive layout of model-vs-human's ``cue-conflict.tar.gz`` (``cue-conflict/<shape>/<shape><n>-<texture><m>.png``).

The demo's models know only the demo's classes (:func:`clip_robustness.demo.generate.demo_classes`), so the demo
maps categories onto them with its own category mapping (:func:`demo_category_mapping`), written beside the archives
and named by the demo registry's ``category_mapping``: the k-th demo class is the k-th of model-vs-human's category
names in name order (one ImageNet index per category). What stands for shape and texture on the demo's striped
images: the **shape** cue is the shape class's stripe geometry (orientation and frequency), the **texture** cue the
texture class's colour (hue) and grain (noise). Models trained on clean demo images use both, in proportions that
differ between models, so the demo's shape biases vary; they say nothing about real shape bias.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from clip_robustness.datasets.cue_conflict import CategoryMapping, load_category_mapping

#: The archive and its top folder, as model-vs-human publishes them (``v0.1`` release asset ``cue-conflict.tar.gz``).
CUE_CONFLICT_ARCHIVE = "cue-conflict.tar.gz"
CUE_CONFLICT_FOLDER = "cue-conflict"
#: The demo's category mapping file, beside the archives folder.
DEMO_MAPPING_FILE = "cue_conflict_categories.tsv"


def demo_category_mapping(classes: Sequence[int]) -> CategoryMapping:
    """Category k (model-vs-human's names in name order) -> the k-th demo class's ImageNet index."""
    names = load_category_mapping().categories
    if len(classes) > len(names):
        raise ValueError(f"{len(classes)} demo classes but only {len(names)} cue-conflict category names")
    return CategoryMapping(tuple(names[: len(classes)]), tuple((int(c),) for c in classes), "demo category mapping")


def write_category_mapping(mapping: CategoryMapping, path: Path) -> Path:
    """The mapping as TSV (the format :func:`clip_robustness.datasets.cue_conflict.parse_category_mapping` reads)."""
    lines = [
        "# Demo category mapping written by clip_robustness.demo.cue_conflict: category -> demo class's ImageNet index",
        "category\timagenet_indices",
    ]
    lines += [f"{c}\t{','.join(map(str, i))}" for c, i in zip(mapping.categories, mapping.indices)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def render_cue_conflict(
    shape_k: int, texture_k: int, n_classes: int, rng: np.random.Generator, size: int
) -> Image.Image:
    """Stripes with the geometry of demo class ``shape_k`` in the colour and grain of demo class ``texture_k`` (the
    class styles of :func:`clip_robustness.demo.generate.render_image`: hue k/n, angle pi*((3k) mod n)/n, 2 + k mod 3
    cycles per image)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = np.pi * ((shape_k * 3) % n_classes) / n_classes + rng.normal(0, 0.08)
    freq = 2.0 + (shape_k % 3)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    hue = (texture_k / n_classes + rng.normal(0, 0.02)) % 1.0
    base = np.array(colorsys.hsv_to_rgb(hue, 0.75, 0.85))
    rgb = stripes[..., None] * base + (1 - stripes[..., None]) * base * 0.25
    rgb = rgb + rng.normal(0, 0.06 + 0.02 * (texture_k % 3), rgb.shape)
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), mode="RGB")


def write_cue_conflict_tar(out_dir: Path, mapping: CategoryMapping, images_per_pair: int, seed: int, size: int) -> Path:
    """``cue-conflict.tar.gz``: ``cue-conflict/<shape>/<shape><n>-<texture><m>.png`` for every (shape, texture) pair
    of ``mapping``'s categories (same-category pairs included, as in the real set), ``images_per_pair`` each."""
    from clip_robustness.demo.archives import _encode, _write_tar

    rng = np.random.default_rng(seed)
    n = len(mapping.categories)
    members = []
    for s, shape in enumerate(mapping.categories):
        number = 0
        for t, texture in enumerate(mapping.categories):
            for m in range(images_per_pair):
                number += 1
                image = render_cue_conflict(s, t, n, rng, size)
                members.append(
                    (f"{CUE_CONFLICT_FOLDER}/{shape}/{shape}{number}-{texture}{m + 1}.png", _encode(image, "PNG"))
                )
    return _write_tar(Path(out_dir) / CUE_CONFLICT_ARCHIVE, members, gz=True)


def demo_registry_entry(mapping_path: Path) -> dict:
    """The demo registry's ``cue_conflict`` entry: the real entry's layout, with the demo's category mapping."""
    return {
        "title": "Cue conflict (demo: stripe geometry vs colour)",
        "short_title": "Cue conflict",
        "archives": [CUE_CONFLICT_ARCHIVE],
        "layout": "cue_conflict",
        "subdir": CUE_CONFLICT_FOLDER,
        "label_space": "cue_conflict",
        "category_mapping": str(mapping_path.absolute()),
    }
