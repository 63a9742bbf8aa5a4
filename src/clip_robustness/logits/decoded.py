"""The decoded-image cache's arrays: each dataset decoded once per preprocessing geometry, shared by every model
using it.

Every image of a dataset is decoded once per geometry (:mod:`clip_robustness.logits.geometry`) into a uint8 array

    ``data/decoded/{dataset}/{key}.npy``: ``[n, H, W, 3]`` uint8 RGB pixels (0..255), manifest row order,

with a JSON sidecar ``{key}.json`` (:func:`decoded_metadata`), and each logits job streams uint8 batches to
the device, where :class:`NormalizedModel` applies ``/255``, mean and std (the same float operations as
``ToTensor`` + ``Normalize``, so on CPU the logits are bit-identical to the reference path's). This module holds
the Datasets that decode and read the arrays, the writer and the sidecar checks.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clip_robustness import PIPELINE_VERSION
from clip_robustness.logits.geometry import (
    DecodeSpec,
    geometry_from_recipe,
    geometry_key,
)
from clip_robustness.logits.images import open_manifest_image
from clip_robustness.models.adapters.errors import UnsupportedPreprocessingError
from clip_robustness.names import DECODED_DIR
from clip_robustness.workflow.io import atomic_path

log = logging.getLogger(__name__)

#: Layout of the decoded array: images x rows x columns x RGB channels, uint8 0..255.
DECODED_LAYOUT = "NHWC-uint8-RGB"

#: Pixel value scale of ``ToTensor``: uint8 pixels are divided by this to give [0, 1] floats.
PIXEL_SCALE = 255.0


class StaleDecodedCacheError(RuntimeError):
    """A decoded array was made for another manifest or geometry than the one asked for."""


# ----------------------------------------------------------------------------- decoding a dataset


class GeometryImages(Dataset):
    """The images of a manifest in row order, each as a ``[H, W, 3]`` uint8 array after ``geometry``.

    ``root``/``paths``: the manifest's root folder and relative paths; ``border_crop_px``: pixels cut from every
    side first (ObjectNet: 1); ``input_size``: the ``(H, W)`` every image must come out at.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        paths: Sequence[str],
        geometry: Sequence[Callable],
        input_size: tuple[int, int],
        border_crop_px: int = 0,
    ):
        self.root = Path(root)
        self.paths = list(paths)
        self.geometry = list(geometry)
        self.input_size = tuple(input_size)
        self.border_crop_px = int(border_crop_px)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> np.ndarray:
        path = self.root / self.paths[position]
        image = open_manifest_image(path, position, self.border_crop_px)
        for step in self.geometry:
            image = step(image)
        pixels = np.asarray(image, dtype=np.uint8)
        if pixels.shape != (*self.input_size, 3):
            raise UnsupportedPreprocessingError(
                f"manifest row {position} ({path}): the geometry made a {pixels.shape} image, not {(*self.input_size, 3)}"
            )
        return pixels


def _stack(batch: list[np.ndarray]) -> np.ndarray:
    return np.stack(batch)


def decoded_metadata(spec: DecodeSpec, manifest_metadata: Mapping[str, Any], n_images: int) -> dict:
    """The JSON sidecar of a decoded array: geometry (``key``, ``steps``, ``library``/``recipe``, ``input_size``),
    layout, the manifest it indexes (``dataset``, ``manifest_hash``, ``n_images``, ``border_crop_px``) and the
    versions of the decoders (Pillow, torchvision), which can change pixels."""
    from importlib.metadata import version

    return {
        "key": spec.key,
        "input_size": list(spec.input_size),
        "steps": list(spec.steps),
        "library": spec.library,
        "recipe": json.loads(json.dumps(dict(spec.recipe))),
        "layout": DECODED_LAYOUT,
        "dataset": str(manifest_metadata["dataset"]),
        "manifest_hash": str(manifest_metadata["manifest_hash"]),
        "border_crop_px": int(manifest_metadata.get("border_crop_px", 0)),
        "n_images": int(n_images),
        "pillow_version": version("pillow"),
        "torchvision_version": version("torchvision"),
        "pipeline_version": PIPELINE_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _atomic_json(path: Path, payload: Mapping[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))


def decode_dataset(
    manifest: Any,
    spec: DecodeSpec,
    output: str | os.PathLike,
    metadata_output: str | os.PathLike,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
) -> Path:
    """Decode every image of ``manifest`` through ``spec``'s geometry into ``output`` (``.npy``, ``[n, H, W, 3]``
    uint8, row order) and write its JSON sidecar ``metadata_output``; returns ``output``.

    ``manifest``: a :class:`clip_robustness.datasets.manifest.Manifest`; ``num_workers``: decoding processes.
    The array is written to a temp file in the same folder, its disk blocks reserved first (a full disk fails at
    once with an ``OSError`` naming the file and the bytes needed), then renamed; the sidecar is written after
    it. A failure leaves neither file behind.
    """
    output, metadata_output = Path(output), Path(metadata_output)
    dataset = _geometry_images(manifest, spec, output)
    n = len(dataset)
    h, w = spec.input_size
    metadata_output.unlink(missing_ok=True)
    with atomic_path(output) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
        _reserve_disk_blocks(tmp, output, n, (h, w))
        _fill_decoded(array, dataset, spec.key, batch_size=batch_size, num_workers=num_workers)
        array.flush()
        del array
    try:
        _atomic_json(metadata_output, decoded_metadata(spec, manifest.metadata, n))
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    log.info("decoded %d images to %s (%.2f GiB)", n, output, output.stat().st_size / 2**30)
    return output


def _geometry_images(manifest: Any, spec: DecodeSpec, output: Path) -> GeometryImages:
    """The manifest's images through ``spec``'s geometry; raises when the recipe's geometry is not ``spec.key``."""
    geometry = geometry_from_recipe(spec.library, spec.recipe)
    if geometry_key(geometry) != spec.key:
        raise StaleDecodedCacheError(
            f"{output}: the {spec.library} recipe {dict(spec.recipe)} gives geometry {geometry_key(geometry)}, not {spec.key}"
        )
    table = manifest.table
    dataset = GeometryImages(
        manifest.root,
        table["path"].tolist(),
        geometry,
        spec.input_size,
        int(manifest.metadata.get("border_crop_px", 0)),
    )
    if len(dataset) == 0:
        raise ValueError(f"{output}: the manifest of {manifest.metadata.get('dataset')!r} has no images")
    return dataset


def _reserve_disk_blocks(tmp: Path, output: Path, n: int, input_size: tuple[int, int]) -> None:
    """Reserve ``tmp``'s disk blocks so that a full disk fails here, naming ``output`` and the bytes needed."""
    h, w = input_size
    n_bytes = tmp.stat().st_size
    with open(tmp, "r+b") as stream:  # reserve the blocks: a full disk must fail here, not as SIGBUS mid-write
        try:
            os.posix_fallocate(stream.fileno(), 0, n_bytes)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"{output}: cannot reserve {n_bytes / 2**30:.2f} GiB for {n} decoded "
                f"{h}x{w} images ({exc.strerror}); free disk space or set "
                "inference.decoded_cache: false",
            ) from exc


def _fill_decoded(array: np.ndarray, dataset: GeometryImages, key: str, *, batch_size: int, num_workers: int) -> None:
    """Decode ``dataset`` batch by batch into the rows of ``array``, in order, with a progress bar."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_stack)
    start = 0
    with tqdm(total=len(dataset), desc=f"decode {key}", unit="img", mininterval=10.0) as bar:
        for batch in loader:
            array[start : start + len(batch)] = batch
            start += len(batch)
            bar.update(len(batch))


def decoded_size_bytes(n_images: int, input_size: tuple[int, int]) -> int:
    """Bytes of a decoded array of ``n_images`` images of ``input_size`` (H, W) pixels (uint8 RGB), header excluded."""
    return int(n_images) * int(input_size[0]) * int(input_size[1]) * 3


# ----------------------------------------------------------------------------- reading it back


def read_decoded_metadata(path: str | os.PathLike) -> dict:
    """The JSON sidecar of a decoded array (``{key}.json`` beside ``{key}.npy``)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StaleDecodedCacheError(
            f"{path}: not a readable decoded-cache sidecar ({exc}); delete it and rerun"
        ) from exc


def check_decoded(
    metadata: Mapping[str, Any], path: str | os.PathLike, *, key: str, manifest_hash: str, n_images: int
) -> None:
    """Raise :class:`StaleDecodedCacheError` naming ``path`` and both values when the decoded array was made for
    another geometry ``key``, another manifest, or holds another number of images."""
    problems = [
        f"{name}: expected {want!r}, found {metadata.get(name)!r}"
        for name, want in (
            ("key", key),
            ("manifest_hash", manifest_hash),
            ("n_images", n_images),
            ("layout", DECODED_LAYOUT),
        )
        if metadata.get(name) != want
    ]
    if problems:
        raise StaleDecodedCacheError(
            f"{path}: stale decoded images ({'; '.join(problems)}). Delete it and run the same command again: "
            "snakemake rebuilds it for the jobs that read it."
        )


def checked_decoded_metadata(decoded: str | os.PathLike, manifest: Any) -> dict:
    """The sidecar of the decoded array ``decoded`` (beside it, ``.json``), checked to hold ``manifest``'s images at
    the geometry the sidecar names (:func:`check_decoded`): the cheap check a logits job makes before building its
    model."""
    decoded = Path(decoded)
    metadata = read_decoded_metadata(decoded.with_suffix(".json"))
    check_decoded(
        metadata,
        decoded,
        key=str(metadata.get("key")),
        manifest_hash=str(manifest.metadata["manifest_hash"]),
        n_images=len(manifest.table),
    )
    return metadata


def npy_layout(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset in bytes)`` of a C-ordered ``.npy`` file, read from its header alone."""
    with open(path, "rb") as stream:
        version = np.lib.format.read_magic(stream)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise StaleDecodedCacheError(f"{path}: .npy format version {version} is not 1.0 or 2.0")
        shape, fortran_order, dtype = readers[version](stream)
        offset = stream.tell()
    if fortran_order:
        raise StaleDecodedCacheError(f"{path}: a Fortran-ordered array; decoded arrays are C-ordered")
    return tuple(int(d) for d in shape), np.dtype(dtype), offset


class DecodedImages(Dataset):
    """A decoded array read back: ``dataset[i]`` is a ``[H, W, 3]`` uint8 tensor, and :meth:`read_rows` reads a run
    of rows with one positioned read (``os.preadv``) straight into a caller's tensor (pinned, on a GPU node): from the
    page cache that is one copy per byte, the fastest a file can be read (no memory-map page faults, no stacking).

    Readers batch it with :class:`DecodedBatches` (one item = one whole batch)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        shape, dtype, self.offset = npy_layout(self.path)
        if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8:
            raise StaleDecodedCacheError(f"{self.path}: expected a [n, H, W, 3] uint8 array, got {shape} {dtype}")
        self.shape = shape
        self.row_bytes = int(np.prod(shape[1:]))
        # open now, so the read-ahead threads share one descriptor; a loader worker (another process) opens its own
        self._fd: int | None = os.open(self.path, os.O_RDONLY)
        self._pid: int | None = os.getpid()

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def read_rows(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``[start, stop)`` as a ``[stop - start, H, W, 3]`` uint8 tensor, read with positioned reads into
        ``out`` (a contiguous uint8 CPU tensor of that shape, e.g. pinned) or a new tensor; ``out`` is returned.
        A file shorter than its header says raises :class:`StaleDecodedCacheError`."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"{self.path}: rows [{start}, {stop}) outside [0, {len(self)})")
        shape = (stop - start, *self.shape[1:])
        if out is None:
            out = torch.empty(shape, dtype=torch.uint8)
        elif (
            tuple(out.shape) != shape or out.dtype != torch.uint8 or not out.is_contiguous() or out.device.type != "cpu"
        ):
            raise ValueError(
                f"out must be a contiguous uint8 CPU tensor of shape {shape}, got {out.dtype} "
                f"{list(out.shape)} on {out.device}"
            )
        if stop == start:
            return out
        view = memoryview(out.numpy()).cast("B")
        position, done, fd = self.offset + start * self.row_bytes, 0, self._file()
        while done < len(view):
            got = os.preadv(fd, [view[done:]], position + done)
            if got == 0:
                raise StaleDecodedCacheError(
                    f"{self.path}: truncated: rows [{start}, {stop}) end past the file's end; "
                    "delete it and run the same command again"
                )
            done += got
        return out

    def __getitem__(self, position: int) -> torch.Tensor:
        position = int(position)
        return self.read_rows(position, position + 1)[0]

    def __getitems__(self, positions: Sequence[int]) -> torch.Tensor:
        positions = [int(p) for p in positions]
        first = positions[0]
        if positions == list(range(first, first + len(positions))):
            return self.read_rows(first, first + len(positions))
        return torch.stack([self[p] for p in positions])


def batch_bounds(n: int, batch_size: int, start: int = 0) -> list[tuple[int, int]]:
    """``(first row, end row)`` of each batch of ``batch_size`` rows covering rows ``[start, n)`` in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [(lo, min(lo + batch_size, n)) for lo in range(start, n, batch_size)]


class BufferRing:
    """``size`` reused uint8 host buffers: item ``i`` of a reader goes to buffer ``i % size``. Reusing memory avoids
    the page faults of fresh allocations (about twice the read throughput on CPU). Safe for a consumer that holds
    fewer than ``size`` items at once, counting those still being read."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a ring needs at least one buffer, got {size}")
        self._buffers: list[torch.Tensor | None] = [None] * int(size)

    def __len__(self) -> int:
        return len(self._buffers)

    def buffer(self, i: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Buffer ``i % size`` as a contiguous uint8 tensor of ``shape`` (grown when it holds fewer rows)."""
        slot = i % len(self._buffers)
        held = self._buffers[slot]
        if held is None or held.shape[0] < shape[0] or tuple(held.shape[1:]) != tuple(shape[1:]):
            held = self._buffers[slot] = torch.empty(shape, dtype=torch.uint8)
        return held[: shape[0]]


class DecodedBatches(Dataset):
    """Whole batches of a :class:`DecodedImages`: item ``i`` is rows ``[start + i * batch_size, ...)`` as one
    ``[b, H, W, 3]`` uint8 tensor, read as one contiguous slice of the file (:meth:`DecodedImages.read_rows`).

    ``pin``: read straight into pinned memory (CUDA hosts; torch's caching host allocator reuses the blocks once
    their copies to the device are done), so nothing copies the batch again before the device copy. ``ring``: read
    item ``i`` into a :class:`BufferRing`'s buffer instead of a new tensor (CPU); ``None``: a new tensor per item.
    """

    def __init__(
        self, images: DecodedImages, batch_size: int, start: int = 0, pin: bool = False, ring: BufferRing | None = None
    ):
        if pin and ring is not None:
            raise ValueError("pinned batches come from torch's caching host allocator, not a ring")
        self.images = images
        self.bounds = batch_bounds(len(images), batch_size, start)
        self.pin = bool(pin)
        self.ring = ring

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, i: int) -> torch.Tensor:
        lo, hi = self.bounds[i]
        shape = (hi - lo, *self.images.shape[1:])
        if self.ring is not None:
            out = self.ring.buffer(i, shape)
        else:
            out = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
        return self.images.read_rows(lo, hi, out)


def stack_uint8(batch: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Collate for :class:`DecodedImages` read per image: a batch already read as one tensor passes through."""
    return batch if isinstance(batch, torch.Tensor) else torch.stack(list(batch))


class NormalizedModel(torch.nn.Module):
    """``model`` fed with uint8 ``[b, H, W, 3]`` pixels: converts on the device to normalised float ``[b, 3, H, W]``
    exactly as ``ToTensor`` + ``Normalize(mean, std)`` do (``x / 255``, ``- mean``, ``/ std``, float32), then calls
    ``model``. ``channels_last``: keep the NHWC memory order (faster convolutions on GPU) instead of a contiguous
    NCHW copy (what the reference path feeds, hence bit-identical results on CPU)."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        mean: Sequence[float],
        std: Sequence[float],
        channels_last: bool = False,
    ):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.channels_last = bool(channels_last)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"expected uint8 [b, H, W, 3] pixels, got {pixels.dtype} {list(pixels.shape)}")
        x = pixels.permute(0, 3, 1, 2)
        if not self.channels_last:
            x = x.contiguous()
        x = x.to(torch.float32).div(PIXEL_SCALE)
        x = x.sub(self.mean.to(x.device)).div(self.std.to(x.device))
        return self.model(x)


# ----------------------------------------------------------------------------- decoding a group under the disk budget

#: Bytes reserved per array beyond its pixels (the ``.npy`` header: 128 bytes; a page to be safe).
NPY_HEADER_ALLOWANCE = 4096


def decode_group(
    manifests: Sequence[Any],
    spec: DecodeSpec,
    outputs: Sequence[str | os.PathLike],
    metadata_outputs: Sequence[str | os.PathLike],
    *,
    budget_bytes: int | None = None,
    budget_root: str | os.PathLike = DECODED_DIR,
    job: str = "decode",
    batch_size: int = 64,
    num_workers: int = 0,
) -> list[Path]:
    """Decode several manifests through one geometry (:func:`decode_dataset` each), under the decoded-array budget;
    an array that is already current (:func:`decoded_is_current`) is kept, not decoded again.

    ``manifests``/``outputs``/``metadata_outputs``: parallel lists. ``budget_bytes`` (config
    ``inference.decoded_budget_gb``; ``None``: no cap): before writing anything, the job reserves the bytes of all
    its arrays at once (:func:`clip_robustness.logits.budget.reserve`), waiting while the arrays alive under
    ``budget_root`` leave too little room, so a logits job's inputs are never half decoded while the disk is full.
    """
    from clip_robustness.logits.budget import refresh, reserve

    if not len(manifests) == len(outputs) == len(metadata_outputs):
        raise ValueError(f"{job}: {len(manifests)} manifests, {len(outputs)} outputs, {len(metadata_outputs)} sidecars")
    todo = []
    for manifest, output, metadata_output in zip(manifests, outputs, metadata_outputs):
        if decoded_is_current(manifest, spec, output, metadata_output):
            log.info("%s is current (manifest %s), kept", output, manifest.manifest_hash[:12])
        else:
            todo.append((manifest, output, metadata_output))
    n_bytes = sum(decoded_size_bytes(len(m.table), spec.input_size) + NPY_HEADER_ALLOWANCE for m, _, _ in todo)
    written = []
    with reserve(budget_root, n_bytes, budget_bytes, job) as reservation:
        for manifest, output, metadata_output in todo:
            refresh(reservation)
            written.append(
                decode_dataset(manifest, spec, output, metadata_output, batch_size=batch_size, num_workers=num_workers)
            )
    return written


#: Sidecar keys that do not identify a decoded array's content.
VOLATILE_SIDECAR_KEYS = ("created_utc",)


def decoded_is_current(
    manifest: Any, spec: DecodeSpec, output: str | os.PathLike, metadata_output: str | os.PathLike
) -> bool:
    """True when ``output`` and its sidecar already hold ``manifest`` decoded through ``spec``: the sidecar records
    what :func:`decoded_metadata` would write now (geometry, manifest hash, image count, decoder versions; the time
    aside) and the array has the size of that many images. A group job then keeps it (its outputs are ``update()``
    files): a changed dataset re-decodes only its own arrays, the group's others stay byte-identical."""
    output, metadata_output = Path(output), Path(metadata_output)
    try:
        recorded = json.loads(metadata_output.read_text())
        size = output.stat().st_size
    except (OSError, ValueError):
        return False
    n = len(manifest.table)
    now = decoded_metadata(spec, manifest.metadata, n)
    same = all(recorded.get(key) == value for key, value in now.items() if key not in VOLATILE_SIDECAR_KEYS)
    return same and 0 <= size - decoded_size_bytes(n, spec.input_size) <= NPY_HEADER_ALLOWANCE
