"""Running a model over a manifest: data loading, precision, progress, and out-of-memory back-off.

:func:`compute_logits` streams a dataset through a model in manifest order and returns float32 logits.
On an out-of-memory error (CUDA's ``OutOfMemoryError``, or any allocator "out of memory" / "can't
allocate memory" error) it halves the batch size and redoes only the failed batch; finished batches
are kept. :func:`cache_dataset_logits` is the whole cache job: build the model, run it, write the parquet.

Two input paths feed the model (recorded as ``input_pipeline`` in the cache metadata):

- ``reference``: each job decodes the manifest's images with the model's own transform (PIL, CPU workers);
- ``decoded``: the job streams a shared uint8 array decoded once per preprocessing geometry
  (:mod:`clip_robustness.logits.decoded`) in whole batches (one positioned read each, into pinned memory on CUDA),
  copied to the device on a side stream while it computes the previous batch, and normalised there. On CPU its
  logits are bit-identical to the reference path's.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

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


#: Batches read ahead of the one the device computes: by the decoded path's read-ahead threads, and for the next
#: dataset of a group job while the current one computes (:func:`prepare_manifest`).
PREFETCH_BATCHES = 2

#: Threads reading the decoded path's batches (each batch one positioned read): two reads in flight keep a page-cached
#: array streaming at memory speed while the main thread drives the device.
READ_THREADS = 2


class ReadAhead:
    """Iterate the items ``batches[0], batches[1], ...`` of a map-style dataset in order, with up to ``depth`` of them
    being fetched ahead by ``threads`` background threads.

    The decoded path's items are whole batches read with ``os.preadv`` (which releases the GIL), so the next batches
    are read while the main thread drives the device, and two threads read two batches at once. An error raised
    while fetching an item is raised by ``next`` for that item. Fetching starts at construction (priming);
    :meth:`close` stops it.
    """

    def __init__(self, batches: Dataset, depth: int = PREFETCH_BATCHES, threads: int = READ_THREADS):
        if depth < 1 or threads < 1:
            raise ValueError(f"depth and threads must be >= 1, got {depth} and {threads}")
        self._batches = batches
        self._n = len(batches)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="read-ahead")
        self._pending: deque[Future] = deque()
        self._next_index = 0
        self._depth = depth
        self._fill()

    def _fill(self) -> None:
        while self._next_index < self._n and len(self._pending) < self._depth:
            self._pending.append(self._pool.submit(self._batches.__getitem__, self._next_index))
            self._next_index += 1

    def __iter__(self) -> "ReadAhead":
        return self

    def __next__(self) -> Any:
        if not self._pending:
            self.close()
            raise StopIteration
        try:
            item = self._pending.popleft().result()
        except BaseException:
            self.close()
            raise
        self._fill()
        return item

    def close(self) -> None:
        """Stop fetching: items not started are dropped, and the reads under way are waited for (their buffers may be
        reused by the next reader)."""
        self._next_index = self._n
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


class BatchSource:
    """Where a dataset's batches come from: ``n`` rows, and :meth:`open` ``(start, batch_size)``: an iterable of the
    batches of rows ``[start, n)`` in order (the loop reopens at a smaller batch size after an out-of-memory error).

    ``opener``: the function :meth:`open` calls. :meth:`prime` opens ``(0, batch_size)`` ahead of time (a group job's
    next dataset, while the current one computes); the next :meth:`open` of that start and size returns it.
    """

    def __init__(self, n: int, opener: Callable[[int, int], Iterable[torch.Tensor]]):
        self.n = int(n)
        self._opener = opener
        self._primed: tuple[int, Iterable[torch.Tensor]] | None = None

    def prime(self, batch_size: int) -> None:
        """Open the batches from row 0 now (a read-ahead source starts reading its first batches)."""
        self.close()
        self._primed = (batch_size, self._opener(0, batch_size))

    def open(self, start: int, batch_size: int) -> Iterable[torch.Tensor]:
        if self._primed is not None and start == 0 and self._primed[0] == batch_size:
            batches, self._primed = self._primed[1], None
            return batches
        self.close()
        return self._opener(start, batch_size)

    def close(self) -> None:
        """Drop a primed, unused opening."""
        if self._primed is not None:
            _close(self._primed[1])
            self._primed = None


def _close(batches: Iterable[Any]) -> None:
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def batch_source(
    dataset: Dataset,
    num_workers: int,
    device: str | torch.device,
    collate_fn: Callable[[Any], torch.Tensor] | None = None,
) -> BatchSource:
    """The batches of ``dataset`` for ``device``.

    A :class:`~clip_robustness.logits.decoded.DecodedImages` (the decoded path) is read in whole batches, each one
    contiguous slice of the array read by :class:`ReadAhead`'s thread straight into pinned memory on CUDA
    (:class:`~clip_robustness.logits.decoded.DecodedBatches`); ``num_workers`` is not used there: one thread reads
    faster than a model consumes (docs/performance.md, "The loader"). Any other dataset is read per item by a DataLoader
    with ``num_workers`` processes and ``collate_fn``, pinned on CUDA.
    """
    from clip_robustness.logits.decoded import BufferRing, DecodedBatches, DecodedImages

    pin = torch.device(device).type == "cuda"
    if isinstance(dataset, DecodedImages):
        # CPU: a ring of reused host buffers (compute_logits holds at most two batches besides the ones being read,
        # and a closed ReadAhead has finished its reads); CUDA: pinned buffers from torch's caching host allocator,
        # which reuses each once its copy to the device is done
        ring = None if pin else BufferRing(PREFETCH_BATCHES + 3)

        def open_decoded(start: int, batch_size: int) -> Iterable[torch.Tensor]:
            return ReadAhead(DecodedBatches(dataset, batch_size, start, pin=pin, ring=ring))

        return BatchSource(len(dataset), open_decoded)

    def open_items(start: int, batch_size: int) -> Iterable[torch.Tensor]:
        return DataLoader(
            Subset(dataset, range(start, len(dataset))),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=pin,
            persistent_workers=False,
            collate_fn=collate_fn,
            prefetch_factor=4 if num_workers > 0 else None,
        )

    return BatchSource(len(dataset), open_items)


class DeviceFeed:
    """Host batches to the device: on CUDA each copy is issued without blocking on a side stream, so it overlaps the
    compute stream's forward of the previous batch; :meth:`take` makes the compute stream wait for it. On CPU both are
    the identity (no copy)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def put(self, batch: torch.Tensor) -> torch.Tensor:
        """Start copying ``batch`` to the device; returns the device tensor (not to be used before :meth:`take`)."""
        if self.stream is None:
            return batch.to(self.device)
        with torch.cuda.stream(self.stream):
            return batch.to(self.device, non_blocking=True)

    def take(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (from :meth:`put`), ready for use on the current stream."""
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            images.record_stream(current)
        return images


class LogitsGather:
    """Device logits into the host array ``[n, n_outputs]``: on CUDA each batch's logits are copied without blocking
    into pinned memory and written into the array later (:meth:`flush`), so the host never waits for the batch the
    device is computing; on CPU they are written at once."""

    def __init__(self, n: int, device: torch.device):
        self.n = n
        self.cuda = device.type == "cuda"
        self.out: np.ndarray | None = None
        self._pending: deque[tuple[int, torch.Tensor, Any]] = deque()

    def add(self, row: int, logits: torch.Tensor) -> None:
        """Logits of rows ``[row, row + len(logits))`` (float32, on the device)."""
        if self.out is None:
            self.out = np.empty((self.n, logits.shape[1]), dtype=np.float32)
        if not self.cuda:
            self.out[row : row + len(logits)] = logits.numpy()
            return
        host = torch.empty(logits.shape, dtype=logits.dtype, pin_memory=True)
        host.copy_(logits, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((row, host, event))

    def flush(self, keep: int = 0) -> None:
        """Write all but the ``keep`` most recent pending batches into the array (waiting for their copies)."""
        while len(self._pending) > keep:
            row, host, event = self._pending.popleft()
            event.synchronize()
            self.out[row : row + len(host)] = host.numpy()


# Longer than 60 lines: the batch loop and its two closures share one run's feed, gather and shrinking batch size;
# about half is the docstring.
def compute_logits(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset | None,
    batch_size: int,
    num_workers: int,
    device: str | torch.device,
    precision: Precision,
    progress_desc: str = "logits",
    collate_fn: Callable[[Any], torch.Tensor] | None = None,
    source: BatchSource | None = None,
) -> np.ndarray:
    """Run ``model_fn`` over every item of ``dataset`` in order; float32 ``[len(dataset), n_outputs]``.

    ``model_fn`` maps a ``[b, 3, H, W]`` batch on ``device`` to ``[b, n_outputs]`` logits. Runs under no_grad,
    with autocast to ``precision.amp_dtype`` when it is set (:func:`resolve_precision` sets it on CPU only when
    asked). On out-of-memory the batch size is halved and the
    failed batch redone from where it failed; the loader then continues at the smaller size. Raises
    :class:`InferenceOOMError` when one image does not fit. A tqdm bar reports progress on stderr (the job log).
    ``collate_fn``: the DataLoader's (default: torch's ``default_collate``). ``source``: the batches, when already
    made (and perhaps primed) by the caller; default :func:`batch_source` of ``dataset``.

    The device never waits on the host (CUDA): while it computes batch ``i``, the host reads batch ``i + 1`` and its
    copy to the device runs on a side stream (:class:`DeviceFeed`); logits come back without blocking and are
    written into the result one batch later (:class:`LogitsGather`). On CPU the same steps run in order.
    """
    device = torch.device(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if source is None:
        if dataset is None:
            raise ValueError("compute_logits needs a dataset or a batch source")
        source = batch_source(dataset, num_workers, device, collate_fn)
    n = source.n
    if n == 0:
        raise ValueError("the dataset is empty: there is nothing to compute logits for")
    autocast_enabled = precision.amp_dtype is not None
    feed, gather = DeviceFeed(device), LogitsGather(n, device)

    def forward(images: torch.Tensor) -> torch.Tensor:
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=device.type, dtype=precision.amp_dtype or torch.float32, enabled=autocast_enabled
            ),
        ):
            logits = model_fn(images)
        return logits.float()

    def run_loaded_batch(images: torch.Tensor, start: int, size: int) -> int:
        """Forward a batch already on the device in chunks of ``size``, halving on OOM; returns the size that worked."""
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
            gather.add(start + done, logits)
            done += len(chunk)
        return size

    def next_on_device(batches: Iterator[torch.Tensor]) -> torch.Tensor | None:
        batch = next(batches, None)
        return None if batch is None else feed.put(batch)

    start = 0
    with tqdm(total=n, desc=progress_desc, unit="img", mininterval=10.0, dynamic_ncols=False) as bar:
        while start < n:
            opened = source.open(start, batch_size)
            batches = iter(opened)
            try:
                ahead = next_on_device(batches)
                while ahead is not None:
                    images = feed.take(ahead)
                    size = run_loaded_batch(images, start, batch_size)
                    start += len(images)
                    bar.update(len(images))
                    if size < batch_size:
                        batch_size = size  # reopen the batches at the smaller size
                        break
                    ahead = next_on_device(batches)  # read and copy the next batch while the device computes
                    gather.flush(keep=1)
            finally:
                _close(opened)
    gather.flush()
    assert gather.out is not None
    return gather.out


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
    from clip_robustness.models.build import build_model, library_version, select_device

    model_id = str(row["model_id"])
    adapter = row_adapter(row)
    device = device or select_device()
    precision = resolve_precision(precision_name, allow_tf32, device, cpu_autocast)
    head, prompt_set = _checked_head(adapter.needs_text_head, model_id, head_path, prompt_set)
    decoded_metadata = None
    if decoded is not None:  # cheap checks first: the array must be this manifest's
        from clip_robustness.logits.decoded import checked_decoded_metadata

        decoded_metadata = checked_decoded_metadata(decoded, manifest)
    model, preprocess, preprocessing = build_model(row, device)
    built = BuiltModel(
        row, model, adapter.classifier(model, head), preprocess, preprocessing, head, prompt_set, library_version(row)
    )
    apply_tf32(precision)
    run = RunOptions(precision, device, batch_size, num_workers, channels_last)
    path, _ = logits_for_manifest(built, manifest, output, decoded=decoded, decoded_metadata=decoded_metadata, run=run)
    return path


def _checked_head(
    needs_text_head: bool, model_id: str, head_path: str | os.PathLike | None, prompt_set: str | None
) -> tuple[Any, str | None]:
    """The zero-shot head and its prompt set, checked as this model's (``(None, None)`` for a classifier)."""
    if not needs_text_head:
        return None, None
    from clip_robustness.models.zero_shot import load_head

    if head_path is None:  # cheap checks first: the head must be this model's, for this prompt set
        raise ValueError(f"model {model_id!r} is zero-shot CLIP: its zero-shot head file is required")
    return load_head(head_path, model_id=model_id, prompt_set=prompt_set), prompt_set


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
    library_version: str = ""  # of the library that built it (the cache metadata), read once per job


@dataclass(frozen=True)
class RunOptions:
    """How a built model runs over each dataset of its job: the autocast ``precision`` (:func:`resolve_precision`),
    the ``device``, the batch size, the loader processes and ``channels_last`` (``None``: on CUDA only; the decoded
    path only)."""

    precision: Precision
    device: str | torch.device
    batch_size: int
    num_workers: int
    channels_last: bool | None = None


@dataclass
class PreparedDataset:
    """One dataset made ready for a built model (:func:`prepare_manifest`): its batches (:class:`BatchSource`, perhaps
    primed), the model function that takes them, the cache metadata and where the file goes."""

    dataset_id: str
    manifest: Any
    output: Path
    model_fn: Callable[[torch.Tensor], torch.Tensor]
    source: BatchSource
    metadata: dict
    channels_last: bool
    embeddings_output: Path | None = None  # the embeddings file, when the job caches them (zero-shot models)


def _final_layer(built: BuiltModel, embeddings_output: str | os.PathLike | None) -> Any:
    """The built model's classifier, or with ``embeddings_output`` its variant returning ``[logits | embeddings]``
    (``with_embeddings``); a final layer without embeddings is refused naming the model and the file."""
    if embeddings_output is None:
        return built.classifier
    with_embeddings = getattr(built.classifier, "with_embeddings", None)
    if with_embeddings is None:
        raise ValueError(
            f"model {built.row['model_id']!r}: its final layer gives no image embeddings, so "
            f"{embeddings_output} cannot be written; set inference.cache_embeddings: false"
        )
    return with_embeddings()


def prepare_manifest(
    built: BuiltModel,
    manifest: Any,
    output: str | os.PathLike,
    *,
    decoded: str | os.PathLike | None,
    decoded_metadata: Mapping[str, Any] | None,
    run: RunOptions,
    prime: bool = False,
    embeddings_output: str | os.PathLike | None = None,
) -> PreparedDataset:
    """Everything a dataset needs before its first forward: the input path's dataset and checks (the decoded array's
    geometry against the model's), the cache metadata, and with ``prime`` its first batches already being read (the
    decoded path). Leaves the model untouched, so a group job runs it for the next dataset while the current one
    computes. ``embeddings_output``: also write the L2-normalised image embeddings there (a zero-shot model's final
    layer returns them beside the logits: ``with_embeddings``; :mod:`clip_robustness.logits.embeddings`)."""
    precision, device, batch_size, num_workers = run.precision, run.device, run.batch_size, run.num_workers
    model_id = str(built.row["model_id"])
    dataset_id = str(manifest.metadata["dataset"])
    model_fn, dataset, pipeline = _input_path(
        built, manifest, _final_layer(built, embeddings_output), decoded, decoded_metadata, run
    )
    collate_fn, use_channels_last = (
        (None, False) if decoded_metadata is None else (_stack_uint8, pipeline["channels_last"])
    )
    metadata = _prepared_metadata(built, manifest, len(dataset), pipeline, run)
    source = batch_source(dataset, num_workers, device, collate_fn)
    if prime and decoded_metadata is not None:  # the reference path's loader workers are started by the loop
        source.prime(batch_size)
    log.info(
        "%s on %s: %d images, batch %d, %d workers, %s, input %s",
        model_id,
        dataset_id,
        len(dataset),
        batch_size,
        num_workers,
        precision,
        pipeline,
    )
    return PreparedDataset(
        dataset_id,
        manifest,
        Path(output),
        model_fn,
        source,
        metadata,
        use_channels_last,
        None if embeddings_output is None else Path(embeddings_output),
    )


def _input_path(
    built: BuiltModel,
    manifest: Any,
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    decoded: str | os.PathLike | None,
    decoded_metadata: Mapping[str, Any] | None,
    run: RunOptions,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Dataset, dict[str, Any]]:
    """The model function, dataset and ``input_pipeline`` record of the reference path, or of the decoded path."""
    if decoded_metadata is None:
        dataset: Dataset = ManifestImageDataset(
            manifest.root,
            manifest.table["path"].tolist(),
            built.preprocess,
            int(manifest.metadata.get("border_crop_px", 0)),
        )
        pipeline: dict[str, Any] = {"path": "reference"}
        return model_fn, dataset, pipeline
    return _decoded_input(
        str(built.row["model_id"]),
        model_fn,
        built.preprocess,
        Path(decoded),
        decoded_metadata,
        run.device,
        run.channels_last,
    )


def _prepared_metadata(
    built: BuiltModel, manifest: Any, n_images: int, pipeline: Mapping[str, Any], run: RunOptions
) -> dict:
    """The cache metadata of the built model on ``manifest`` (its input pipeline and head precision included)."""
    from clip_robustness.logits.cache import cache_metadata
    from clip_robustness.models.adapters.final_layer import HEAD_PRECISION
    from clip_robustness.models.build import library_version

    metadata = cache_metadata(
        row=built.row,
        library_version=built.library_version or library_version(built.row),
        preprocessing=built.preprocessing,
        logit_scale=None if built.head is None else built.head.logit_scale,
        prompt_set=built.prompt_set,
        amp_dtype=run.precision.amp_dtype_name,
        allow_tf32=run.precision.allow_tf32,
        gpu_name=device_name(run.device),
        dataset=str(manifest.metadata["dataset"]),
        manifest_hash=str(manifest.metadata["manifest_hash"]),
        n_images=n_images,
    )
    metadata["input_pipeline"] = pipeline
    metadata["head_precision"] = HEAD_PRECISION
    metadata["manifest_subset"] = manifest.metadata.get("subset")
    return metadata


def compute_prepared(built: BuiltModel, prepared: PreparedDataset, run: RunOptions) -> tuple[np.ndarray, float]:
    """The logits of a prepared dataset, and the seconds the forward loop took."""
    if prepared.channels_last:
        built.model.to(memory_format=torch.channels_last)  # idempotent: converted once per job in effect
    start = time.perf_counter()
    try:
        logits = compute_logits(
            prepared.model_fn,
            None,
            run.batch_size,
            run.num_workers,
            run.device,
            run.precision,
            progress_desc=f"{built.row['model_id']}/{prepared.dataset_id}",
            source=prepared.source,
        )
    finally:
        prepared.source.close()
    return logits, time.perf_counter() - start


def write_prepared(prepared: PreparedDataset, logits: np.ndarray) -> tuple[Path, float]:
    """Write a prepared dataset's cache file atomically; returns the path and the seconds the write took.

    With an embeddings output, ``logits`` is ``[logits | embeddings]`` (the ``with_embeddings`` final layer): the
    embeddings file is written first, then the logits file, each atomically."""
    from clip_robustness.logits.cache import write_logits
    from clip_robustness.logits.embeddings import embeddings_metadata, write_embeddings
    from clip_robustness.names import NUM_CLASSES as N_CLASSES

    start = time.perf_counter()
    table = prepared.manifest.table
    index, labels = table["index"].to_numpy(), table["label"].to_numpy()
    if prepared.embeddings_output is not None:
        embeddings, logits = logits[:, N_CLASSES:], logits[:, :N_CLASSES]
        write_embeddings(
            prepared.embeddings_output,
            index,
            labels,
            embeddings,
            embeddings_metadata(prepared.metadata, embeddings.shape[1]),
        )
    path = write_logits(prepared.output, index, labels, logits, prepared.metadata)
    return path, time.perf_counter() - start


def logits_for_manifest(
    built: BuiltModel,
    manifest: Any,
    output: str | os.PathLike,
    *,
    decoded: str | os.PathLike | None,
    decoded_metadata: Mapping[str, Any] | None,
    run: RunOptions,
) -> tuple[Path, dict]:
    """Run ``built`` over ``manifest`` and write its cache file ``output`` atomically (metadata: docs/architecture.md, "Logits cache");
    returns the path and a timing record (``dataset``, ``n_images``, ``inference_s``, ``write_s``).

    ``decoded``/``decoded_metadata``: the fast path's checked array and sidecar, or ``None`` for the reference path.
    The single-dataset job (:func:`cache_dataset_logits`); the group job
    (:func:`clip_robustness.logits.job.cache_group_logits`) runs the same three steps (:func:`prepare_manifest`,
    :func:`compute_prepared`, :func:`write_prepared`) overlapped across its datasets.
    """
    prepared = prepare_manifest(built, manifest, output, decoded=decoded, decoded_metadata=decoded_metadata, run=run)
    logits, inference_s = compute_prepared(built, prepared, run)
    path, write_s = write_prepared(prepared, logits)
    log.info(
        "%s on %s: wrote %s (inference %.2f s, write %.2f s)",
        built.row["model_id"],
        prepared.dataset_id,
        path,
        inference_s,
        write_s,
    )
    return path, {
        "dataset": prepared.dataset_id,
        "n_images": prepared.source.n,
        "inference_s": inference_s,
        "write_s": write_s,
    }


def _stack_uint8(batch: Any) -> torch.Tensor:
    from clip_robustness.logits.decoded import stack_uint8

    return stack_uint8(batch)


def _decoded_input(
    model_id: str,
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    preprocess: Callable,
    decoded: Path,
    decoded_metadata: Mapping[str, Any],
    device: str | torch.device,
    channels_last: bool | None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Dataset, dict]:
    """The fast path's model function (uint8 NHWC in, normalised on the device), dataset and metadata record
    (``channels_last``: whether the model is to run in channels-last memory order; the caller converts it).

    Checks that the built model's own transform has the decoded array's geometry (:class:`StaleDecodedCacheError`
    naming the model, the file and both keys otherwise).
    """
    from clip_robustness.logits.decoded import DecodedImages, NormalizedModel, StaleDecodedCacheError
    from clip_robustness.logits.geometry import geometry_key, split_transform

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
