"""One logits job: build a model once, then run it over several datasets, one parquet per (model, dataset).

The workflow cuts the logits stage into few jobs per model (:mod:`clip_robustness.logits.cutting`): a job
pays the fixed costs (interpreter, torch/timm/open_clip imports, model build, weight load, CUDA start-up)
once and then writes one cache file per dataset of its group, each atomically and each with its own
metadata (:mod:`clip_robustness.logits.cache`), exactly as a one-dataset job would.

The per-dataset fixed costs are hidden behind the forward passes: while one dataset computes, a thread prepares the
next (opens its input, checks it against the model, reads its first batches), and each finished dataset's parquet is
written by a background writer (zstd compression releases the GIL), so the device goes from one dataset's last batch
to the next one's first without waiting. Each write stays atomic; a failed write fails the job.

Outputs already on disk are kept when they are *current* (:func:`reuse_reason`): their metadata is what
:func:`~clip_robustness.logits.cache.current_metadata` says (this model, manifest, prompt set, head precision, subset;
the same definition the check before planning uses) plus the precision this job runs in, and the file is newer than
its manifest, head and weights.
The workflow marks these outputs ``update()`` so Snakemake leaves them in place when it reruns a group
(a dataset added to the study, one manifest rebuilt): only the files that changed are computed.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from clip_robustness.logits.loop import (
    BuiltModel,
    PreparedDataset,
    RunOptions,
    apply_tf32,
    compute_prepared,
    prepare_manifest,
    resolve_precision,
    write_prepared,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetTask:
    """One (model, dataset) output of a group job.

    ``dataset``: dataset id; ``manifest``: ``data/manifests/{dataset}.parquet``; ``output``: the cache file
    ``results/logits/{model}/{dataset}.parquet``; ``decoded``: the dataset's decoded array for the model's
    geometry (fast path), or ``None`` (reference path); ``embeddings``: the image-embeddings file written beside the
    logits (zero-shot models, config ``inference.cache_embeddings``), or ``None``.
    """

    dataset: str
    manifest: Path
    output: Path
    decoded: Path | None = None
    embeddings: Path | None = None


def tasks_from_lists(
    datasets: Sequence[str],
    manifests: Sequence[str],
    outputs: Sequence[str],
    decoded: Sequence[str] | None = None,
    embeddings: Sequence[str] | None = None,
) -> list[DatasetTask]:
    """Zip the rule's parallel lists (same dataset order) into :class:`DatasetTask` objects (a lone path counts as
    a list of one); ``decoded`` and ``embeddings`` may be empty (reference path; no embeddings cache)."""

    def as_list(x: Any) -> list:
        return [x] if isinstance(x, (str, os.PathLike)) else list(x)

    datasets, manifests, outputs = (as_list(x) for x in (datasets, manifests, outputs))
    decoded = as_list(decoded) if decoded else [None] * len(datasets)
    embeddings = as_list(embeddings) if embeddings else [None] * len(datasets)
    if not len(datasets) == len(manifests) == len(outputs) == len(decoded) == len(embeddings):
        raise ValueError(
            f"datasets ({len(datasets)}), manifests ({len(manifests)}), outputs ({len(outputs)}), "
            f"decoded arrays ({len(decoded)}) and embeddings ({len(embeddings)}) must be parallel lists"
        )
    return [
        DatasetTask(str(d), Path(m), Path(o), None if a is None else Path(a), None if e is None else Path(e))
        for d, m, o, a, e in zip(datasets, manifests, outputs, decoded, embeddings)
    ]


def reuse_reason(
    output: str | os.PathLike, expect: Mapping[str, Any], newer_than: Sequence[str | os.PathLike]
) -> str | None:
    """``None`` when the cache file ``output`` can be kept as it is, else why it must be (re)computed.

    Kept: it exists, reads as a cache file, its metadata has every value of ``expect``, and it is at least as new
    as every file of ``newer_than`` (the manifest, the zero-shot head, the local weights: what Snakemake compares).
    """
    from clip_robustness.logits.cache import CacheError, check_expected, read_metadata

    output = Path(output)
    if not output.exists():
        return "missing"
    try:
        check_expected(output, read_metadata(output), expect)
    except CacheError as exc:
        return str(exc)
    mtime = output.stat().st_mtime
    for path in newer_than:
        if Path(path).exists() and Path(path).stat().st_mtime > mtime:
            return f"older than {path}"
    return None


# Longer than 60 lines: the group job's sequence (cheap checks for every dataset, one model build, the overlapped
# prepare/compute/write loop, the records); its steps are functions already.
def cache_group_logits(
    row: Mapping[str, Any],
    tasks: Sequence[DatasetTask],
    *,
    head_path: str | os.PathLike | None,
    weights_path: str | os.PathLike | None = None,
    prompt_set: str | None,
    batch_size: int,
    num_workers: int,
    precision_name: str,
    allow_tf32: bool,
    device: str | None = None,
    channels_last: bool | None = None,
    cpu_autocast: bool = False,
    timings: list[dict] | None = None,
) -> list[Path]:
    """The group job: build ``row``'s model once, then write the cache file of every task that is not current.

    ``head_path``: the model's zero-shot head (zero-shot CLIP models; ``None`` for classifiers);
    ``weights_path``: its local weights file, if any (a newer one makes every file stale).
    Other arguments as :func:`clip_robustness.logits.loop.cache_dataset_logits`. Every manifest and decoded array
    is checked before the model is built; each output is written atomically as soon as it is computed (by a
    background writer, while the next dataset computes: :func:`run_overlapped`), so a job
    that fails on its fifth dataset has written four valid files. ``timings``: if given, one record per computed
    dataset is appended (``dataset``, ``n_images``, ``inference_s``: seconds in the forward loop,
    ``write_s``: seconds writing the parquet). Returns the outputs written (the current ones are not rewritten).
    """
    from clip_robustness.datasets.manifest import read_manifest
    from clip_robustness.logits.cache import current_metadata
    from clip_robustness.logits.decoded import checked_decoded_metadata
    from clip_robustness.models.adapters import row_adapter
    from clip_robustness.models.build import build_model, library_version, select_device
    from clip_robustness.models.zero_shot import load_head

    model_id = str(row["model_id"])
    adapter = row_adapter(row)
    device = device or select_device()
    precision = resolve_precision(precision_name, allow_tf32, device, cpu_autocast)
    head = None if head_path is None else load_head(head_path, model_id=model_id, prompt_set=prompt_set)
    prompt_set = prompt_set if head is not None else None
    todo: list[tuple[DatasetTask, Any, dict | None]] = []
    for task in tasks:  # cheap checks first, for every dataset, before any model is built
        manifest = read_manifest(task.manifest)
        if str(manifest.metadata["dataset"]) != task.dataset:
            raise ValueError(
                f"{task.manifest} is the manifest of {manifest.metadata['dataset']!r}, not {task.dataset!r}"
            )
        expect = current_metadata(
            row,
            manifest.metadata,
            prompt_set,
            {"amp_dtype": precision.amp_dtype_name, "allow_tf32": precision.allow_tf32},
        )
        newer_than = [task.manifest, *(p for p in (head_path, weights_path) if p)]
        reason = reuse_reason(task.output, expect, newer_than)
        if reason is None and task.embeddings is not None:  # both files current, or both recomputed
            reason = reuse_reason(task.embeddings, expect, newer_than)
        if reason is None:
            log.info("%s on %s: %s is current, kept", model_id, task.dataset, task.output)
            continue
        log.info("%s on %s: computing (%s)", model_id, task.dataset, reason.split(". ")[0])
        decoded_metadata = None if task.decoded is None else checked_decoded_metadata(task.decoded, manifest)
        todo.append((task, manifest, decoded_metadata))
    if not todo:
        log.info("%s: every output of the group is current; no model built", model_id)
        return []
    model, preprocess, preprocessing = build_model(row, device)
    built = BuiltModel(
        row, model, adapter.classifier(model, head), preprocess, preprocessing, head, prompt_set, library_version(row)
    )  # once per job: the python adapter's lookup is slow (docs/performance.md)
    apply_tf32(precision)
    run = RunOptions(precision, device, batch_size, num_workers, channels_last)

    def prepare(item: tuple[DatasetTask, Any, dict | None]) -> PreparedDataset:
        task, manifest, decoded_metadata = item
        return prepare_manifest(
            built,
            manifest,
            task.output,
            decoded=task.decoded,
            decoded_metadata=decoded_metadata,
            run=run,
            prime=True,
            embeddings_output=task.embeddings,
        )

    def compute(prepared: PreparedDataset) -> tuple[Any, float]:
        return compute_prepared(built, prepared, run)

    results = run_overlapped(todo, prepare, compute, write_prepared, discard=lambda prepared: prepared.source.close())
    written = []
    for (task, _, _), (path, record) in zip(todo, results):
        log.info(
            "%s on %s: wrote %s (inference %.2f s, write %.2f s)",
            model_id,
            task.dataset,
            path,
            record["inference_s"],
            record["write_s"],
        )
        written.append(path)
        if timings is not None:
            timings.append({**record, "dataset": task.dataset})
    return written


def _keep(prepared: Any) -> None:
    """The default ``discard`` of :func:`run_overlapped`: nothing to release."""


def run_overlapped(
    items: Sequence[Any],
    prepare: Callable[[Any], Any],
    compute: Callable[[Any], tuple[Any, float]],
    write: Callable[[Any, Any], tuple[Path, float]],
    discard: Callable[[Any], None] = _keep,
) -> list[tuple[Path, dict]]:
    """``write(p, compute(p))`` for ``p = prepare(item)`` of every item in order, overlapped: ``prepare`` of the next
    item runs in a thread while the current one computes, and each ``write`` in a background writer thread, in order.

    ``compute`` runs in the calling thread (it drives the device). Returns ``(path, record)`` per item, ``record``
    holding ``n_images``, ``inference_s`` (the compute), ``write_s`` (the write itself) and ``wait_s`` (seconds the
    calling thread waited for the item's preparation: the exposed part of it), ``compute_started``
    (``time.perf_counter()`` when its compute began, for benchmarks). A failed write is raised as soon as
    it is seen (and at the latest after the last compute): the writes already queued finish first, so every file
    of the items before it is written; the job fails either way. A failed preparation or compute is raised likewise,
    after the writes of the items before it; ``discard`` then releases an item prepared but never computed.
    """
    if not items:
        return []
    records: list[dict] = []
    writes: list[Future] = []
    upcoming: Future | None = None
    try:
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-next") as preparer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer") as writer,
        ):
            upcoming = preparer.submit(prepare, items[0])
            for k in range(len(items)):
                waited = time.perf_counter()
                prepared = upcoming.result()
                wait_s = time.perf_counter() - waited
                upcoming = preparer.submit(prepare, items[k + 1]) if k + 1 < len(items) else None
                started = time.perf_counter()
                logits, inference_s = compute(prepared)
                writes.append(writer.submit(write, prepared, logits))
                records.append(
                    {"n_images": len(logits), "inference_s": inference_s, "wait_s": wait_s, "compute_started": started}
                )
                for done in writes:  # a failed write fails the job now, not after the whole group
                    if done.done() and done.exception() is not None:
                        raise done.exception()
            out = []
            for future, record in zip(writes, records):
                path, write_s = future.result()
                out.append((path, {**record, "write_s": write_s}))
        return out
    finally:  # the executors are shut down here: a dataset prepared but never computed stops its reads
        if upcoming is not None and upcoming.done() and not upcoming.cancelled() and upcoming.exception() is None:
            discard(upcoming.result())
