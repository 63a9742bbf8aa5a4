"""Running a model over a manifest: data loading, precision, progress, and out-of-memory back-off.

:func:`compute_logits` streams a dataset through a model in manifest order and returns float32 logits.
On an out-of-memory error (CUDA's ``OutOfMemoryError``, or any allocator "out of memory" / "can't
allocate memory" error) it halves the batch size and redoes only the failed batch; finished batches
are kept. :func:`cache_dataset_logits` is the whole cache job: build the model, run it, write the parquet.

Two input paths feed the model (recorded as ``input_pipeline`` in the cache metadata):

- ``reference``: each job decodes the manifest's images with the model's own transform (PIL, CPU workers);
- ``decoded``: the job streams a shared uint8 array decoded once per preprocessing geometry
  (:mod:`clip_robustness.logits.decoded`), pinned and copied asynchronously to the device, where it is
  normalised. On CPU its logits are bit-identical to the reference path's.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from clip_robustness.logits.images import ManifestImageDataset

log = logging.getLogger(__name__)

#: Config ``inference.precision`` values -> autocast dtype on GPU (``None``: no autocast, float32).
AMP_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}

#: Substrings of allocator errors that mean "this batch did not fit" (CUDA and CPU allocators).
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


class InferenceOOMError(RuntimeError):
    """A batch of one image still does not fit in memory."""


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: ``amp_dtype`` (autocast dtype, ``None`` for plain float32) and TF32."""

    amp_dtype: torch.dtype | None
    allow_tf32: bool

    @property
    def amp_dtype_name(self) -> str:
        """``bfloat16``, ``float16`` or ``float32`` (no autocast), as recorded in the cache metadata."""
        return "float32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")


def resolve_precision(name: str, allow_tf32: bool, device: str | torch.device, cpu_autocast: bool = False) -> Precision:
    """The precision for config ``inference.precision`` = ``name`` on ``device``.

    On CUDA: autocast to ``name``'s dtype, TF32 as ``allow_tf32``. On CPU: float32, unless ``cpu_autocast``
    (config ``inference.cpu_autocast``) asks for CPU autocast to ``name``'s dtype (bf16 is what CPUs support
    well); TF32 is a CUDA setting and stays off.
    """
    if name not in AMP_DTYPES:
        raise ValueError(f"inference.precision must be one of {sorted(AMP_DTYPES)}, got {name!r}")
    if torch.device(device).type != "cuda":
        return Precision(amp_dtype=AMP_DTYPES[name] if cpu_autocast else None, allow_tf32=False)
    return Precision(amp_dtype=AMP_DTYPES[name], allow_tf32=bool(allow_tf32))


def apply_tf32(precision: Precision) -> None:
    """Set torch's global TF32 switches (matmul and cuDNN) to ``precision.allow_tf32``."""
    torch.backends.cuda.matmul.allow_tf32 = precision.allow_tf32
    torch.backends.cudnn.allow_tf32 = precision.allow_tf32


def device_name(device: str | torch.device) -> str:
    """The GPU's name for a CUDA device, else ``"cpu"``."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocator failure: ``torch.OutOfMemoryError`` or a RuntimeError saying memory ran out."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


def _free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def compute_logits(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    device: str | torch.device,
    precision: Precision,
    progress_desc: str = "logits",
    collate_fn: Callable[[Any], torch.Tensor] | None = None,
) -> np.ndarray:
    """Run ``model_fn`` over every item of ``dataset`` in order; float32 ``[len(dataset), n_outputs]``.

    ``model_fn`` maps a ``[b, 3, H, W]`` batch on ``device`` to ``[b, n_outputs]`` logits. Runs under no_grad,
    with autocast to ``precision.amp_dtype`` when it is set (:func:`resolve_precision` sets it on CPU only when
    asked). On out-of-memory the batch size is halved and the
    failed batch redone from where it failed; the loader then continues at the smaller size. Raises
    :class:`InferenceOOMError` when one image does not fit. A tqdm bar reports progress on stderr (the job log).
    ``collate_fn``: the DataLoader's (default: torch's ``default_collate``); batches are pinned on CUDA and copied
    with ``non_blocking=True``, so the next batch loads while the device computes.
    """
    device = torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty: there is nothing to compute logits for")
    out: np.ndarray | None = None
    autocast_enabled = precision.amp_dtype is not None

    def forward(images: torch.Tensor) -> np.ndarray:
        images = images.to(device, non_blocking=True)
        with torch.no_grad(), torch.autocast(
            device_type=device.type, dtype=precision.amp_dtype or torch.float32, enabled=autocast_enabled
        ):
            logits = model_fn(images)
        return logits.float().cpu().numpy()

    def run_loaded_batch(images: torch.Tensor, start: int, size: int) -> int:
        """Forward an already-loaded batch in chunks of ``size``, halving on OOM; returns the size that worked."""
        nonlocal out
        done = 0
        while done < len(images):
            chunk = images[done : done + size]
            try:
                logits = forward(chunk)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                logits = None  # handled below, once the traceback (and the tensors it holds) is released
            if logits is None:
                _free_memory(device)
                if size == 1:
                    raise InferenceOOMError(
                        f"out of memory at batch size 1 (image {start + done}) on {device}: the model does not fit; "
                        "use a device with more memory"
                    ) from None
                size //= 2
                log.warning("out of memory at image %d; halving the batch size to %d", start + done, size)
                continue
            if out is None:
                out = np.empty((n, logits.shape[1]), dtype=np.float32)
            out[start + done : start + done + len(chunk)] = logits
            done += len(chunk)
        return size

    start = 0
    with tqdm(total=n, desc=progress_desc, unit="img", mininterval=10.0, dynamic_ncols=False) as bar:
        while start < n:
            remaining = Subset(dataset, range(start, n))
            loader = DataLoader(
                remaining,
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
                collate_fn=collate_fn,
                prefetch_factor=4 if num_workers > 0 else None,
            )
            for images in loader:
                size = run_loaded_batch(images, start, batch_size)
                start += len(images)
                bar.update(len(images))
                if size < batch_size:
                    batch_size = size  # restart the loader at the smaller size
                    break
    assert out is not None
    return out


def cache_dataset_logits(
    row: Mapping[str, Any],
    manifest: Any,
    output: str | os.PathLike,
    *,
    head_path: str | os.PathLike | None,
    prompt_set: str | None,
    batch_size: int,
    num_workers: int,
    precision_name: str,
    allow_tf32: bool,
    device: str | None = None,
    decoded: str | os.PathLike | None = None,
    channels_last: bool | None = None,
    cpu_autocast: bool = False,
) -> Path:
    """The cache job for one (model, dataset): build the model, run it over the manifest, write the parquet.

    ``row``: model-registry row; ``manifest``: a :class:`clip_robustness.datasets.manifest.Manifest` (``.table``
    with ``index``, ``path``, ``label``; ``.metadata`` with ``dataset``, ``manifest_hash`` and optionally
    ``border_crop_px``; ``.root``);
    ``head_path``: the model's saved zero-shot head (zero-shot models only: :func:`~clip_robustness.models.adapters.is_zero_shot`);
    ``prompt_set``: the head's expected prompt set; ``device``: ``None`` picks CUDA when available, else CPU.
    ``decoded``: the manifest's decoded uint8 array (``data/decoded/{dataset}/{key}.npy``, its JSON sidecar beside
    it) for the fast path; ``None`` runs the reference path (JPEG decoding in this job). The array must hold this
    model's preprocessing geometry and this manifest (:class:`~clip_robustness.logits.decoded.StaleDecodedCacheError`
    otherwise, before any image is computed). ``channels_last``: feed NHWC tensors and convert the model to
    channels-last memory order (default: on CUDA only; the decoded path only). ``cpu_autocast``: honour
    ``precision_name`` on CPU too (:func:`resolve_precision`).
    The logits come out of the adapter's float32 final layer (:meth:`~clip_robustness.models.adapters.base.ModelAdapter.classifier`),
    recorded as ``head_precision`` in the metadata. Weights are checked before anything is computed; the output is
    written atomically.
    """
    from clip_robustness.models.adapters import row_adapter
    from clip_robustness.models.build import build_model, select_device
    from clip_robustness.models.zero_shot import load_head

    model_id = str(row["model_id"])
    adapter = row_adapter(row)
    device = device or select_device()
    precision = resolve_precision(precision_name, allow_tf32, device, cpu_autocast)
    head = None
    if adapter.needs_text_head:  # cheap checks first: the head must be this model's, for this prompt set
        if head_path is None:
            raise ValueError(f"model {model_id!r} is zero-shot CLIP: its zero-shot head file is required")
        head = load_head(head_path, model_id=model_id, prompt_set=prompt_set)
    else:
        prompt_set = None
    decoded_metadata = None
    if decoded is not None:  # cheap checks first: the array must be this manifest's
        from clip_robustness.logits.decoded import check_decoded, read_decoded_metadata

        decoded = Path(decoded)
        decoded_metadata = read_decoded_metadata(decoded.with_suffix(".json"))
        check_decoded(decoded_metadata, decoded, key=str(decoded_metadata.get("key")),
                      manifest_hash=str(manifest.metadata["manifest_hash"]), n_images=len(manifest.table))
    model, preprocess, preprocessing = build_model(row, device)
    built = BuiltModel(row, model, adapter.classifier(model, head), preprocess, preprocessing, head, prompt_set)
    apply_tf32(precision)
    path, _ = logits_for_manifest(built, manifest, output, decoded=decoded, decoded_metadata=decoded_metadata,
                                  precision=precision, device=device, batch_size=batch_size, num_workers=num_workers,
                                  channels_last=channels_last)
    return path


@dataclass(frozen=True)
class BuiltModel:
    """A model built once by a logits job: its registry ``row``, the module, its float32-final-layer classifier
    (the adapter's, with the zero-shot ``head`` when it has one), its transform and preprocessing record, and the
    prompt set of its head (``None`` for classifiers)."""

    row: Mapping[str, Any]
    model: torch.nn.Module
    classifier: Callable[[torch.Tensor], torch.Tensor]
    preprocess: Callable
    preprocessing: Mapping[str, Any]
    head: Any
    prompt_set: str | None


def logits_for_manifest(
    built: BuiltModel,
    manifest: Any,
    output: str | os.PathLike,
    *,
    decoded: str | os.PathLike | None,
    decoded_metadata: Mapping[str, Any] | None,
    precision: Precision,
    device: str | torch.device,
    batch_size: int,
    num_workers: int,
    channels_last: bool | None = None,
) -> tuple[Path, dict]:
    """Run ``built`` over ``manifest`` and write its cache file ``output`` atomically (metadata: docs/architecture.md, "Logits cache");
    returns the path and a timing record (``dataset``, ``n_images``, ``inference_s``, ``write_s``).

    ``decoded``/``decoded_metadata``: the fast path's checked array and sidecar, or ``None`` for the reference path.
    Shared by the single-dataset job (:func:`cache_dataset_logits`) and the group job
    (:func:`clip_robustness.logits.job.cache_group_logits`).
    """
    from clip_robustness.logits.cache import cache_metadata, write_logits
    from clip_robustness.models.adapters.base import HEAD_PRECISION
    from clip_robustness.models.build import library_version

    model_id = str(built.row["model_id"])
    table = manifest.table
    dataset_id = str(manifest.metadata["dataset"])
    model_fn, collate_fn = built.classifier, None
    if decoded_metadata is None:
        dataset: Dataset = ManifestImageDataset(
            manifest.root, table["path"].tolist(), built.preprocess, int(manifest.metadata.get("border_crop_px", 0))
        )
        pipeline: dict[str, Any] = {"path": "reference"}
    else:
        model_fn, dataset, pipeline = _decoded_input(
            model_id, built.model, built.classifier, built.preprocess, Path(decoded), decoded_metadata, device,
            channels_last,
        )
        collate_fn = _stack_uint8
    metadata = cache_metadata(
        row=built.row,
        library_version=library_version(built.row),
        preprocessing=built.preprocessing,
        logit_scale=None if built.head is None else built.head.logit_scale,
        prompt_set=built.prompt_set,
        amp_dtype=precision.amp_dtype_name,
        allow_tf32=precision.allow_tf32,
        gpu_name=device_name(device),
        dataset=dataset_id,
        manifest_hash=str(manifest.metadata["manifest_hash"]),
        n_images=len(dataset),
    )
    metadata["input_pipeline"] = pipeline
    metadata["head_precision"] = HEAD_PRECISION
    metadata["manifest_subset"] = manifest.metadata.get("subset")
    log.info("%s on %s: %d images, batch %d, %d workers, %s, input %s", model_id, dataset_id, len(dataset), batch_size,
             num_workers, precision, pipeline)
    start = time.perf_counter()
    logits = compute_logits(model_fn, dataset, batch_size, num_workers, device, precision,
                            progress_desc=f"{model_id}/{dataset_id}", collate_fn=collate_fn)
    inference_s = time.perf_counter() - start
    path = write_logits(output, table["index"].to_numpy(), table["label"].to_numpy(), logits, metadata)
    write_s = time.perf_counter() - start - inference_s
    log.info("%s on %s: wrote %s (inference %.2f s, write %.2f s)", model_id, dataset_id, path, inference_s, write_s)
    return path, {"dataset": dataset_id, "n_images": len(dataset), "inference_s": inference_s, "write_s": write_s}


def _stack_uint8(batch: Any) -> torch.Tensor:
    from clip_robustness.logits.decoded import stack_uint8

    return stack_uint8(batch)


def _decoded_input(
    model_id: str,
    model: torch.nn.Module,
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    preprocess: Callable,
    decoded: Path,
    decoded_metadata: Mapping[str, Any],
    device: str | torch.device,
    channels_last: bool | None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Dataset, dict]:
    """The fast path's model function (uint8 NHWC in, normalised on the device), dataset and metadata record.

    Checks that the built model's own transform has the decoded array's geometry (:class:`StaleDecodedCacheError`
    naming the model, the file and both keys otherwise).
    """
    from clip_robustness.logits.decoded import (
        DecodedImages,
        NormalizedModel,
        StaleDecodedCacheError,
        geometry_key,
        split_transform,
    )

    geometry, mean, std = split_transform(preprocess, model_id)
    key = geometry_key(geometry)
    if key != decoded_metadata.get("key"):
        raise StaleDecodedCacheError(
            f"model {model_id!r}: its transform's geometry is {key}, but {decoded} holds {decoded_metadata.get('key')}. "
            "The key derived when the DAG was built disagrees with the built model; set inference.decoded_cache: false "
            "to run this model through the reference path, and report the model."
        )
    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dataset = DecodedImages(decoded)
    pipeline = {
        "path": "decoded",
        "decoded_key": key,
        "decoded_file": str(decoded),
        "decoded_created_utc": decoded_metadata.get("created_utc"),
        "normalize_on_device": True,
        "channels_last": bool(channels_last),
    }
    return NormalizedModel(model_fn, mean, std, channels_last=channels_last).eval(), dataset, pipeline
