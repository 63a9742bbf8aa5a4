"""One logits job: build a model once, then run it over several datasets, one parquet per (model, dataset).

The workflow cuts the logits stage into few jobs per model (:mod:`clip_robustness.logits.cutting`): a job
pays the fixed costs (interpreter, torch/timm/open_clip imports, model build, weight load, CUDA start-up)
once and then writes one cache file per dataset of its group, each atomically and each with its own
metadata (:mod:`clip_robustness.logits.cache`), exactly as a one-dataset job would.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from clip_robustness.logits.loop import BuiltModel, apply_tf32, logits_for_manifest, resolve_precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetTask:
    """One (model, dataset) output of a group job.

    ``dataset``: dataset id; ``manifest``: ``data/manifests/{dataset}.parquet``; ``output``: the cache file
    ``results/logits/{model}/{dataset}.parquet``; ``decoded``: the dataset's decoded array for the model's
    geometry (fast path), or ``None`` (reference path).
    """

    dataset: str
    manifest: Path
    output: Path
    decoded: Path | None = None


def tasks_from_lists(datasets: Sequence[str], manifests: Sequence[str], outputs: Sequence[str],
                     decoded: Sequence[str] | None = None) -> list[DatasetTask]:
    """Zip the rule's parallel lists (same dataset order) into :class:`DatasetTask` objects (a lone path counts as
    a list of one)."""
    datasets, manifests, outputs = ([x] if isinstance(x, (str, os.PathLike)) else list(x)
                                    for x in (datasets, manifests, outputs))
    decoded = ([decoded] if isinstance(decoded, (str, os.PathLike)) else list(decoded)) if decoded else [None] * len(datasets)
    if not len(datasets) == len(manifests) == len(outputs) == len(decoded):
        raise ValueError(f"datasets ({len(datasets)}), manifests ({len(manifests)}), outputs ({len(outputs)}) and "
                         f"decoded arrays ({len(decoded)}) must be parallel lists")
    return [DatasetTask(str(d), Path(m), Path(o), None if a is None else Path(a))
            for d, m, o, a in zip(datasets, manifests, outputs, decoded)]


def reuse_reason(output: str | os.PathLike, expect: Mapping[str, Any], newer_than: Sequence[str | os.PathLike]) -> str | None:
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
    is checked before the model is built; each output is written atomically as soon as it is computed, so a job
    that fails on its fifth dataset has written four valid files. ``timings``: if given, one record per computed
    dataset is appended (``dataset``, ``n_images``, ``inference_s``: seconds in the forward loop,
    ``write_s``: seconds writing the parquet). Returns the outputs written (the current ones are not rewritten).
    """
    from clip_robustness.datasets.manifest import read_manifest
    from clip_robustness.logits.cache import current_metadata
    from clip_robustness.logits.decoded import check_decoded, read_decoded_metadata
    from clip_robustness.models.adapters import row_adapter
    from clip_robustness.models.build import build_model, select_device
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
            raise ValueError(f"{task.manifest} is the manifest of {manifest.metadata['dataset']!r}, not {task.dataset!r}")
        expect = current_metadata(row, manifest.metadata, prompt_set,
                                  {"amp_dtype": precision.amp_dtype_name, "allow_tf32": precision.allow_tf32})
        newer_than = [task.manifest, *(p for p in (head_path, weights_path) if p)]
        reason = reuse_reason(task.output, expect, newer_than)
        if reason is None:
            log.info("%s on %s: %s is current, kept", model_id, task.dataset, task.output)
            continue
        log.info("%s on %s: computing (%s)", model_id, task.dataset, reason.split(". ")[0])
        decoded_metadata = None
        if task.decoded is not None:
            decoded_metadata = read_decoded_metadata(task.decoded.with_suffix(".json"))
            check_decoded(decoded_metadata, task.decoded, key=str(decoded_metadata.get("key")),
                          manifest_hash=str(manifest.metadata["manifest_hash"]), n_images=len(manifest.table))
        todo.append((task, manifest, decoded_metadata))
    if not todo:
        log.info("%s: every output of the group is current; no model built", model_id)
        return []
    model, preprocess, preprocessing = build_model(row, device)
    built = BuiltModel(row, model, adapter.classifier(model, head), preprocess, preprocessing, head, prompt_set)
    apply_tf32(precision)
    written = []
    for task, manifest, decoded_metadata in todo:
        path, timing = logits_for_manifest(built, manifest, task.output, decoded=task.decoded,
                                           decoded_metadata=decoded_metadata, precision=precision, device=device,
                                           batch_size=batch_size, num_workers=num_workers, channels_last=channels_last)
        written.append(path)
        if timings is not None:
            timings.append({**timing, "dataset": task.dataset})
    return written
