"""The decoded-image fast path: geometry keys, the decoded uint8 array, and logits equal to the reference path's.

Real open_clip / timm models (tiny configs, random weights) on a generated dataset of the demo's images at
assorted sizes; the reference is the cache job without the decoded array (JPEG decoding in the job).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from test_inference import cache_on_cpu

from clip_robustness.datasets.label_spaces import LabelSpace
from clip_robustness.datasets.manifest import manifest_hash, read_manifest
from clip_robustness.demo.generate import render_image
from clip_robustness.logits.cache import read_logits
from clip_robustness.logits.decoded import (
    BufferRing,
    DecodedBatches,
    DecodedImages,
    NormalizedModel,
    StaleDecodedCacheError,
    batch_bounds,
    decode_dataset,
    stack_uint8,
)
from clip_robustness.logits.geometry import (
    decode_spec_for_row,
    geometry_key,
    spec_from_transform,
    split_transform,
)
from clip_robustness.logits.images import UnreadableImageError
from clip_robustness.logits.loop import cache_dataset_logits
from clip_robustness.models.adapters.errors import UnsupportedPreprocessingError
from clip_robustness.models.build import build_model
from clip_robustness.models.zero_shot import build_head_for_row, save_head

CLASSES = (1, 2, 3, 4)


def make_manifest(root: Path, n: int, dataset: str = "imagenet_v2_threshold07", border_crop_px: int = 0):
    """``n`` demo images (class-coloured stripes), resized to assorted non-square sizes, JPEG and PNG."""
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        image = render_image(label, rng, classes=CLASSES, domain="clean")
        image = image.resize((int(rng.integers(90, 260)), int(rng.integers(90, 260))), Image.BILINEAR)
        relative = f"{label}/img_{i:03d}.{'jpg' if i % 3 else 'png'}"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / relative)
        paths.append(relative)
        labels.append(label)
    table = pd.DataFrame({"index": np.arange(n, dtype=np.int32), "path": paths, "label": np.asarray(labels, np.int16)})
    metadata = {
        "dataset": dataset,
        "root": str(root),
        "manifest_hash": manifest_hash(table),
        "n_images": n,
        "label_space": json.loads(LabelSpace.imagenet_1k().to_json()),
        "border_crop_px": border_crop_px,
    }
    path = root.parent / f"{dataset}.parquet"
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(arrow.replace_schema_metadata({"clip_robustness": json.dumps(metadata)}), path)
    return read_manifest(path)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("data") / "images", 24)


def decode_for(row, manifest, folder: Path) -> Path:
    spec = decode_spec_for_row(row)
    npy = folder / manifest.metadata["dataset"] / f"{spec.key}.npy"
    return decode_dataset(manifest, spec, npy, npy.with_suffix(".json"), batch_size=5, num_workers=0)


def assert_same_predictions(fast: np.ndarray, reference: np.ndarray, atol: float) -> None:
    agreement = np.mean(fast.argmax(1) == reference.argmax(1))
    assert agreement >= 0.999, f"top-1 agrees on {agreement:.2%} of images"
    assert np.max(np.abs(fast - reference)) <= atol


# ----------------------------------------------------------------------------- fast path == reference path


def timm_row(tmp_path: Path, architecture: str, seed: int) -> dict:
    torch.manual_seed(seed)
    weights = tmp_path / f"{architecture}.safetensors"
    save_file(timm.create_model(architecture, num_classes=1000).state_dict(), str(weights))
    return {
        "model_id": f"timm__{architecture}.local",
        "library": "timm",
        "architecture": architecture,
        "pretrained": "demo",
        "weights_file": str(weights),
    }


@pytest.mark.parametrize("architecture", ["test_vit", "test_convnext"])
def test_timm_fast_path_logits_match_the_reference_path(tmp_path, manifest, architecture):
    row = timm_row(tmp_path, architecture, seed=3)
    npy = decode_for(row, manifest, tmp_path / "decoded")
    common = dict(
        head_path=None,
        prompt_set=None,
        batch_size=7,
        num_workers=0,
        precision_name="bf16",
        allow_tf32=True,
        device="cpu",
    )

    cache_dataset_logits(row, manifest, tmp_path / "ref.parquet", **common)
    cache_dataset_logits(row, manifest, tmp_path / "fast.parquet", decoded=npy, **common)

    reference, fast = read_logits(tmp_path / "ref.parquet"), read_logits(tmp_path / "fast.parquet")
    # the same float32 operations on the same pixels: on CPU the two paths agree to float rounding
    assert_same_predictions(fast.logits, reference.logits, atol=1e-4)
    assert reference.metadata["input_pipeline"] == {"path": "reference"}
    assert fast.metadata["input_pipeline"]["path"] == "decoded"
    assert fast.metadata["input_pipeline"]["decoded_key"] == npy.stem
    assert fast.metadata["preprocessing"] == reference.metadata["preprocessing"]


def test_zero_shot_clip_fast_path_logits_match_the_reference_path(tmp_path, manifest):
    import open_clip

    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("clip_tiny_demo", pretrained=None)
    weights = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    row = {
        "model_id": "openclip__clip_tiny_demo.local",
        "library": "open_clip",
        "architecture": "clip_tiny_demo",
        "pretrained": "demo",
        "weights_file": str(weights),
    }
    head_path = save_head(build_head_for_row(row, "simple", "cpu", progress=False), tmp_path / "head.pt")
    npy = decode_for(row, manifest, tmp_path / "decoded")
    common = dict(
        head_path=head_path,
        prompt_set="simple",
        batch_size=8,
        num_workers=0,
        precision_name="bf16",
        allow_tf32=True,
        device="cpu",
    )

    cache_dataset_logits(row, manifest, tmp_path / "ref.parquet", **common)
    cache_dataset_logits(row, manifest, tmp_path / "fast.parquet", decoded=npy, **common)

    reference, fast = read_logits(tmp_path / "ref.parquet"), read_logits(tmp_path / "fast.parquet")
    assert_same_predictions(fast.logits, reference.logits, atol=1e-3)  # logits are scaled by ~100
    assert fast.metadata["logit_scale"] == reference.metadata["logit_scale"]


def test_loader_workers_and_channels_last_give_the_same_fast_path_logits(tmp_path, manifest):
    row = timm_row(tmp_path, "test_resnet", seed=5)
    npy = decode_for(row, manifest, tmp_path / "decoded")
    common = dict(
        head_path=None,
        prompt_set=None,
        batch_size=6,
        precision_name="fp32",
        allow_tf32=False,
        device="cpu",
        decoded=npy,
    )
    cache_dataset_logits(row, manifest, tmp_path / "a.parquet", num_workers=0, **common)
    cache_dataset_logits(row, manifest, tmp_path / "b.parquet", num_workers=1, channels_last=True, **common)
    a, b = read_logits(tmp_path / "a.parquet"), read_logits(tmp_path / "b.parquet")
    assert_same_predictions(b.logits, a.logits, atol=1e-4)
    assert b.metadata["input_pipeline"]["channels_last"] is True


# ----------------------------------------------------------------------------- the decoded array


def test_decoded_pixels_are_the_library_transform_before_its_normalisation(tmp_path, manifest):
    row = {"model_id": "t", "library": "timm", "architecture": "test_vit", "pretrained": "", "weights_file": ""}
    npy = decode_for(row, manifest, tmp_path)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(timm.create_model("test_vit")))
    _, mean, std = split_transform(transform)
    pixels = np.load(npy)
    assert pixels.dtype == np.uint8 and pixels.shape == (24, 160, 160, 3)
    normalise = NormalizedModel(torch.nn.Identity(), mean, std)
    for row_index in (0, 7, 23):
        expected = transform(manifest.open_image(row_index))  # timm's own eval transform, float [3, H, W]
        got = normalise(torch.from_numpy(pixels[row_index : row_index + 1]))[0]
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    meta = json.loads(npy.with_suffix(".json").read_text())
    assert meta["key"] == npy.stem and meta["manifest_hash"] == manifest.manifest_hash and meta["n_images"] == 24
    assert meta["layout"] == "NHWC-uint8-RGB"


def test_border_crop_is_applied_before_the_geometry(tmp_path):
    manifest = make_manifest(tmp_path / "images", 3, dataset="objectnet", border_crop_px=5)
    row = {"model_id": "t", "library": "timm", "architecture": "test_resnet", "pretrained": "", "weights_file": ""}
    spec = decode_spec_for_row(row)
    npy = decode_dataset(manifest, spec, tmp_path / "d.npy", tmp_path / "d.json")
    transform = timm.data.create_transform(**spec.recipe)
    expected = transform(manifest.open_image(1))  # Manifest.open_image applies the border crop
    got = NormalizedModel(torch.nn.Identity(), spec.mean, spec.std)(torch.from_numpy(np.load(npy)[1:2]))[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_unreadable_image_stops_decoding_naming_it_and_leaves_no_file(tmp_path):
    manifest = make_manifest(tmp_path / "images", 4)
    broken = manifest.root / manifest.table["path"].iat[2]
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    spec = decode_spec_for_row({"model_id": "t", "library": "timm", "architecture": "test_resnet", "pretrained": ""})
    out = tmp_path / "decoded"
    with pytest.raises(UnreadableImageError, match=f"manifest row 2: cannot read image {broken}"):
        decode_dataset(manifest, spec, out / "k.npy", out / "k.json")
    assert list(out.iterdir()) == []


def test_decoded_images_reads_contiguous_and_scattered_rows(tmp_path):
    array = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    np.save(tmp_path / "a.npy", array)
    images = DecodedImages(tmp_path / "a.npy")
    assert len(images) == 5
    np.testing.assert_array_equal(images.__getitems__([1, 2, 3]).numpy(), array[1:4])
    np.testing.assert_array_equal(images.__getitems__([4, 0]).numpy(), array[[4, 0]])
    np.testing.assert_array_equal(images[3].numpy(), array[3])


# ----------------------------------------------------------------------------- keys and stale arrays


@pytest.mark.parametrize(
    "name",
    [
        "resnet50.a1_in1k",
        "vit_base_patch16_clip_224.openai_ft_in1k",
        "convnext_base.clip_laion2b_augreg_ft_in1k",
        "inception_v3.tv_in1k",
        "test_resnet",
    ],
)
def test_key_derived_from_timms_pretrained_config_is_the_built_models(name):
    architecture, _, tag = name.partition(".")
    row = {"model_id": name, "library": "timm", "architecture": architecture, "pretrained": tag, "weights_file": ""}
    with torch.device("meta"):  # the real constructor and pretrained_cfg, no weights allocated
        model = timm.create_model(name, pretrained=False)
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    assert decode_spec_for_row(row).key == spec_from_transform(transform, "timm", {}).key


def test_key_derived_for_open_clip_is_the_built_models():
    row = {
        "model_id": "c",
        "library": "open_clip",
        "architecture": "clip_tiny_demo",
        "pretrained": "",
        "weights_file": "",
    }
    _, preprocess, _ = build_model(row, "cpu")
    spec = decode_spec_for_row(row)
    built = spec_from_transform(preprocess, "open_clip", {})
    assert (spec.key, spec.mean, spec.std) == (built.key, built.mean, built.std)
    assert spec.input_size == (32, 32)


def test_models_share_a_key_when_only_mean_and_std_differ_and_not_when_the_crop_does():
    base = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center"}
    clip_norm = dict(base, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
    imagenet_norm = dict(base, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    wider_crop = dict(imagenet_norm, crop_pct=0.95)

    def key(cfg):
        return spec_from_transform(timm.data.create_transform(**cfg), "timm", cfg).key

    assert key(clip_norm) == key(imagenet_norm)
    assert key(wider_crop) != key(imagenet_norm)
    # the key names the output size: 224 / 0.95 = 235.8 -> resize to 235, centre crop 224
    assert key(wider_crop).startswith("224x224-bicubic-")


def test_transform_without_normalize_is_refused_naming_the_model():
    from torchvision import transforms

    with pytest.raises(UnsupportedPreprocessingError, match="(?s)model 'odd'.*does not end in ToTensor, Normalize"):
        split_transform(transforms.Compose([transforms.Resize(8), transforms.ToTensor()]), "odd")


def test_decoded_array_of_another_manifest_is_refused_before_any_model_runs(tmp_path, manifest):
    row = timm_row(tmp_path, "test_resnet", seed=0)
    npy = decode_for(row, manifest, tmp_path / "decoded")
    other = make_manifest(tmp_path / "other" / "images", 5)
    with pytest.raises(
        StaleDecodedCacheError, match=f"{npy}: stale decoded images.*manifest_hash: expected '{other.manifest_hash}'"
    ):
        cache_on_cpu(row, other, tmp_path / "out.parquet", batch_size=4, precision_name="fp32", decoded=npy)
    assert not (tmp_path / "out.parquet").exists()


def test_decoded_array_of_another_geometry_is_refused_naming_model_and_both_keys(tmp_path, manifest):
    clip_row = {
        "model_id": "c",
        "library": "open_clip",
        "architecture": "clip_tiny_demo",
        "pretrained": "",
        "weights_file": "",
    }
    npy = decode_for(clip_row, manifest, tmp_path / "decoded")  # 32 px: not test_resnet's 160 px
    row = timm_row(tmp_path, "test_resnet", seed=0)
    resnet_key = decode_spec_for_row(row).key
    with pytest.raises(StaleDecodedCacheError, match=f"model 'timm__test_resnet.local'.*{resnet_key}.*{npy.stem}"):
        cache_on_cpu(row, manifest, tmp_path / "out.parquet", batch_size=4, precision_name="fp32", decoded=npy)


def test_geometry_key_names_size_and_interpolation():
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    geometry = [transforms.Resize(256, interpolation=InterpolationMode.BILINEAR), transforms.CenterCrop(224)]
    key = geometry_key(geometry)
    assert key.startswith("224x224-bilinear-") and len(key.rsplit("-", 1)[1]) == 10
    assert (
        geometry_key([transforms.Resize(256, interpolation=InterpolationMode.BICUBIC), transforms.CenterCrop(224)])
        != key
    )


def test_key_derived_for_a_python_factory_is_the_built_models(tmp_path):
    row = {
        "model_id": "p",
        "library": "python",
        "architecture": "clip_robustness.demo.models:tiny_convnet",
        "pretrained": "demo",
        "weights_file": "",
    }
    _, preprocess, _ = build_model(row, "cpu")
    spec = decode_spec_for_row(row)
    built = spec_from_transform(preprocess, "python", {})
    assert (spec.key, spec.mean, spec.std, spec.input_size) == (built.key, built.mean, built.std, (32, 32))


def test_python_fast_path_logits_match_the_reference_path(tmp_path, manifest):
    from clip_robustness.demo.models import tiny_convnet

    torch.manual_seed(5)
    weights = tmp_path / "tiny.safetensors"
    save_file(tiny_convnet()[0].state_dict(), str(weights))
    row = {
        "model_id": "python__clip_robustness.demo.models.tiny_convnet__t",
        "library": "python",
        "architecture": "clip_robustness.demo.models:tiny_convnet",
        "pretrained": "t",
        "weights_file": str(weights),
    }
    npy = decode_for(row, manifest, tmp_path / "decoded")
    fast, reference = tmp_path / "fast.parquet", tmp_path / "reference.parquet"
    for output, decoded in ((fast, npy), (reference, None)):
        cache_on_cpu(row, manifest, output, batch_size=4, precision_name="fp32", decoded=decoded)
    assert_same_predictions(read_logits(fast).logits, read_logits(reference).logits, atol=1e-4)


# ----------------------------------------------------------------------------- reading whole batches


def saved_array(tmp_path: Path, n: int = 11, h: int = 4, w: int = 3) -> tuple[np.ndarray, Path]:
    """A ``[n, h, w, 3]`` uint8 array whose every byte differs from its neighbours', saved as ``.npy``."""
    array = (np.arange(n * h * w * 3, dtype=np.int64) * 7 % 251).astype(np.uint8).reshape(n, h, w, 3)
    np.save(tmp_path / "a.npy", array)
    return array, tmp_path / "a.npy"


def test_read_rows_reads_a_run_of_rows_into_a_new_or_the_given_tensor(tmp_path):
    array, path = saved_array(tmp_path)
    images = DecodedImages(path)
    np.testing.assert_array_equal(images.read_rows(2, 9).numpy(), array[2:9])
    out = torch.zeros((3, 4, 3, 3), dtype=torch.uint8)
    assert images.read_rows(8, 11, out) is out
    np.testing.assert_array_equal(out.numpy(), array[8:11])
    assert images.read_rows(5, 5).shape == (0, 4, 3, 3)
    with pytest.raises(ValueError, match="out must be a contiguous uint8 CPU tensor of shape"):
        images.read_rows(0, 2, torch.zeros((3, 4, 3, 3), dtype=torch.uint8))
    with pytest.raises(IndexError, match=r"rows \[9, 12\) outside \[0, 11\)"):
        images.read_rows(9, 12)


def test_a_truncated_array_is_refused_naming_it(tmp_path):
    _, path = saved_array(tmp_path)
    path.write_bytes(path.read_bytes()[:-40])  # the header still says 11 rows
    images = DecodedImages(path)
    assert images.read_rows(0, 2).shape == (2, 4, 3, 3)  # the rows still there read
    with pytest.raises(StaleDecodedCacheError, match=f"{path}: truncated"):
        images.read_rows(0, 11)


@pytest.mark.parametrize("batch_size, start", [(1, 0), (3, 0), (4, 2), (11, 0), (20, 5)])
def test_decoded_batches_are_the_rows_in_order_each_batch_one_slice(tmp_path, batch_size, start):
    array, path = saved_array(tmp_path)
    batches = DecodedBatches(DecodedImages(path), batch_size, start)
    got = [batches[i].clone() for i in range(len(batches))]
    assert [len(b) for b in got[:-1]] == [batch_size] * (len(got) - 1) and 0 < len(got[-1]) <= batch_size
    np.testing.assert_array_equal(torch.cat(got).numpy(), array[start:])
    assert batch_bounds(11, batch_size, start)[0][0] == start


def test_a_buffer_ring_reuses_its_buffers_and_every_batch_still_holds_its_rows(tmp_path):
    array, path = saved_array(tmp_path)
    ring = BufferRing(3)
    batches = DecodedBatches(DecodedImages(path), 2, ring=ring)
    seen = []
    for i in range(len(batches)):  # a consumer holding one batch at a time
        batch = batches[i]
        np.testing.assert_array_equal(batch.numpy(), array[2 * i : 2 * i + 2])
        seen.append(batch.data_ptr())
    assert len(set(seen)) == 3 and seen[:3] == seen[3:6]  # three buffers, reused in turn
    with pytest.raises(ValueError, match="not a ring"):
        DecodedBatches(DecodedImages(path), 2, pin=True, ring=ring)


def test_decoded_images_survive_pickling_for_loader_workers(tmp_path):
    import pickle

    array, path = saved_array(tmp_path)
    images = DecodedImages(path)
    images.read_rows(0, 1)  # the file is open in this process
    copy = pickle.loads(pickle.dumps(images))
    np.testing.assert_array_equal(copy.read_rows(3, 7).numpy(), array[3:7])


def test_batched_decoded_path_gives_the_per_image_paths_logits_bit_for_bit(tmp_path, manifest):
    """The fast path reads whole batches (DecodedBatches through ReadAhead); the logits are those of the same array
    read image by image through a DataLoader and stacked, to the bit."""
    from torch.utils.data import Subset

    from clip_robustness.logits.loop import Precision, compute_logits

    row = timm_row(tmp_path, "test_resnet", seed=2)
    npy = decode_for(row, manifest, tmp_path / "decoded")
    model, preprocess, _ = build_model(row, "cpu")
    _, mean, std = split_transform(preprocess)
    normalised = NormalizedModel(model, mean, std).eval()
    images = DecodedImages(npy)
    per_image = Subset(images, range(len(images)))  # not a DecodedImages: read per item, collated
    for batch_size in (5, 24, 64):
        batched = compute_logits(normalised, images, batch_size, 0, "cpu", Precision(amp_dtype=None, allow_tf32=False))
        reference = compute_logits(
            normalised,
            per_image,
            batch_size,
            0,
            "cpu",
            Precision(amp_dtype=None, allow_tf32=False),
            collate_fn=stack_uint8,
        )
        assert batched.tobytes() == reference.tobytes()
