"""The shared cache: what a colleague needs to regenerate every figure with no dataset, no weights and no GPU.

A shared cache is one tar file (``make share-cache``, rule ``share_cache``: ``results/shared_cache.tar``) holding

- the logits of every (model, dataset) of the study: ``results/logits/{model}/{dataset}.parquet``;
- the small files the metrics and the checks before planning read: the manifests (``data/manifests/``, with their
  skipped-images lists), the zero-shot heads (``results/heads/``), the weights records (``data/weights/``: the sha256
  the logits were computed with);
- with a prompt-set ablation (config ``zero_shot.ablation_prompt_sets``): its models' image embeddings
  (``results/embeddings/``), its text heads (``results/ablation/heads/``) and its prompt files, so the ablation's
  table, figure and findings rows are recomputed from the cache on CPU (no image model, no text tower run);
- under ``shared_cache/``: the study's resolved config (``config.yaml``, its registries pointing at the copies
  beside it), the model registry with its decode-spec table, the dataset registry, ``cache.json`` (versions:
  pipeline, Python, libraries; the study's models and datasets; when it was packed) and ``SHA256SUMS`` (every other
  member with its sha256).

``python -m clip_robustness.workflow.share unpack CACHE`` (``make figures-from-cache CACHE=...``) checks every member
against ``SHA256SUMS`` before anything is written (a missing, extra, unsafe or changed member stops it, naming the
member), then puts the files in place; a file already there with other bytes is never overwritten. The metrics,
figures, tables, findings and report are then computed with only the rules that read the cache
(:func:`from_cache_rules`, ``--allowed-rules``): no download, extraction, decode or logits job can be planned.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from clip_robustness.workflow.currency import sha256_file

#: Folder of the cache's own files inside the tar and, once unpacked, in the working directory.
SHARED_DIR = "shared_cache"
UNPACKED_DIR = Path("results") / SHARED_DIR
SUMS = "SHA256SUMS"
#: The rules ``figures-from-cache`` may run besides one ``plot_{figure}`` rule per figure (:func:`from_cache_rules`, ``--allowed-rules``):
#: they read only the cache (metrics, figures, tables, findings, QC).
FROM_CACHE_RULES = (
    "compute_model_metrics",
    "aggregate_metrics",
    "figures",
    "tabulate_findings",
    "make_tables",
    "qc_published_accuracy",
    "prompt_set_metrics",
    "aggregate_prompt_sets",
    "plot_prompt_sets",
    "from_cache",
)


def from_cache_rules(figure_names: Iterable[str]) -> list[str]:
    """Every rule ``figures-from-cache`` may run: :data:`FROM_CACHE_RULES` and the rule of each figure
    (``clip_robustness.figures.FIGURE_NAMES``; passed in: this package imports no stage)."""
    return [*FROM_CACHE_RULES, *(f"plot_{name}" for name in figure_names)]


#: Distributions whose versions every shared cache records; the model libraries' own are passed in by the caller
#: (their adapters' ``distribution``: this package imports no stage).
CORE_DISTRIBUTIONS = ("clip-robustness", "numpy", "pandas", "pyarrow", "torch", "snakemake")


class SharedCacheError(RuntimeError):
    """A shared cache cannot be packed or used; the message names the file or member and what to do."""


def _versions(distributions: Iterable[str] = ()) -> dict[str, str | None]:
    """``{"interpreter": Python's version, distribution: version or None}`` for the core and given distributions."""
    found: dict[str, str | None] = {"interpreter": platform.python_version()}
    for name in dict.fromkeys([*CORE_DISTRIBUTIONS, *distributions]):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def cache_members(
    models: Iterable[str], datasets: Iterable[str], workdir: str | os.PathLike = ".", ablation_files: Iterable[str] = ()
) -> list[str]:
    """The study's files a shared cache holds (relative paths); :class:`SharedCacheError` names the missing logits
    files, manifests and ``ablation_files`` (the prompt-set ablation's embeddings, heads and prompt files; run the
    pipeline first), and an ablation file outside the checkout (it could not be put back in the same place)."""
    workdir = Path(workdir)
    models, datasets, ablation_files = list(models), list(datasets), [str(path) for path in ablation_files]
    outside = [path for path in ablation_files if Path(path).is_absolute() or ".." in Path(path).parts]
    if outside:
        raise SharedCacheError(
            f"cannot pack a shared cache: {', '.join(outside)} lie(s) outside the checkout; put "
            "the prompt files of zero_shot.ablation_prompt_sets inside it (e.g. config/)."
        )
    needed = [f"results/logits/{m}/{d}.parquet" for m in models for d in datasets]
    needed += [f"data/manifests/{d}.parquet" for d in datasets] + ablation_files
    missing = [path for path in needed if not (workdir / path).is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise SharedCacheError(
            f"cannot pack a shared cache: {len(missing)} file(s) of the study are missing ({shown}). "
            "Run the pipeline first (make demo, or snakemake with your config), then pack again."
        )
    optional = [f"data/manifests/{d}.skipped.csv" for d in datasets]
    optional += [f"results/heads/{m}.pt" for m in models] + [f"data/weights/{m}.json" for m in models]
    return needed + [path for path in optional if (workdir / path).is_file()]


def pack(
    config: Mapping[str, Any],
    models: Iterable[str],
    datasets: Iterable[str],
    out: str | os.PathLike,
    workdir: str | os.PathLike = ".",
    spec_table: str | os.PathLike | None = None,
    distributions: Iterable[str] = (),
    ablation_files: Iterable[str] = (),
) -> Path:
    """Write the shared cache of the study (``config``: the run's resolved config) to ``out`` atomically; its
    ``cache.json`` records the versions of the core distributions and of ``distributions`` (the model libraries').
    ``ablation_files``: the prompt-set ablation's embeddings, heads and prompt files (empty: the study runs no
    ablation, and neither does the cache's)."""
    from clip_robustness.workflow.io import atomic_path

    workdir, out = Path(workdir), Path(out)
    models, datasets = list(models), list(datasets)
    ablation_files = list(ablation_files)
    members = cache_members(models, datasets, workdir, ablation_files)
    registries = {"models.tsv": Path(config["model_registry"]), "datasets.yaml": Path(config["dataset_registry"])}
    if spec_table is not None and (workdir / spec_table).is_file():
        registries[Path(spec_table).name] = Path(spec_table)
    shared_config = json.loads(json.dumps(dict(config)))
    shared_config["model_registry"] = str(UNPACKED_DIR / "models.tsv")
    shared_config["dataset_registry"] = str(UNPACKED_DIR / "datasets.yaml")
    shared_config["models"] = models
    if not ablation_files:  # no ablation packed: none is planned from the cache
        shared_config.setdefault("zero_shot", {})["ablation_prompt_sets"] = []
    extra = {
        f"{SHARED_DIR}/config.yaml": yaml.safe_dump(shared_config, sort_keys=False).encode(),
        f"{SHARED_DIR}/cache.json": json.dumps(
            {
                "format": 1,
                "versions": _versions(distributions),
                "models": models,
                "datasets": datasets,
                "packed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "n_files": len(members),
            },
            indent=1,
        ).encode(),
    }
    for name, path in registries.items():
        extra[f"{SHARED_DIR}/{name}"] = (workdir / path).read_bytes()
    sums = [f"{sha256_file(workdir / path)}  {path}" for path in members]
    sums += [f"{hashlib.sha256(data).hexdigest()}  {name}" for name, data in extra.items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, tarfile.open(tmp, "w") as tar:
        for name, data in {**extra, f"{SHARED_DIR}/{SUMS}": ("\n".join(sums) + "\n").encode()}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(datetime.now().timestamp()), 0o644
            tar.addfile(info, io.BytesIO(data))
        for path in members:
            tar.add(workdir / path, arcname=path, recursive=False)
    return out


def _read_sums(text: str, cache: Path) -> dict[str, str]:
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise SharedCacheError(f"{cache}: {SHARED_DIR}/{SUMS} line {number} is not '<sha256>  <path>': {line!r}")
        sums[name] = digest
    return sums


def unpack(cache: str | os.PathLike, workdir: str | os.PathLike = ".") -> Path:
    """Verify the shared cache ``cache`` member by member against its checksum list, then put its files in place in
    ``workdir``; return the config to run with (``results/shared_cache/config.yaml``). Nothing is written when a
    member is missing, unlisted, unsafe or changed; an existing file with other bytes is never overwritten."""
    cache, workdir = Path(cache), Path(workdir)
    if not cache.is_file():
        raise SharedCacheError(
            f"shared cache {cache} does not exist (make share-cache writes results/shared_cache.tar)"
        )
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".shared_cache-") as tmp:
        staging = Path(tmp)
        try:
            with tarfile.open(cache) as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise SharedCacheError(
                f"shared cache {cache} cannot be read ({type(err).__name__}: {err}); it is truncated, "
                "corrupt or unsafe: ask for it again"
            ) from None
        sums_path = staging / SHARED_DIR / SUMS
        if not sums_path.is_file():
            raise SharedCacheError(f"{cache} is not a shared cache: it has no {SHARED_DIR}/{SUMS}")
        sums = _read_sums(sums_path.read_text(), cache)
        present = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()} - {
            f"{SHARED_DIR}/{SUMS}"
        }
        problems = [f"{name}: listed but missing" for name in sorted(set(sums) - present)]
        problems += [f"{name}: not in the checksum list" for name in sorted(present - set(sums))]
        problems += [
            f"{name}: sha256 {sha256_file(staging / name)[:16]}..., the list says {digest[:16]}..."
            for name, digest in sorted(sums.items())
            if name in present and sha256_file(staging / name) != digest
        ]
        if problems:
            raise SharedCacheError(
                f"shared cache {cache} failed its checksums, nothing was written: " + "; ".join(problems[:20])
            )
        targets = {
            name: workdir / (UNPACKED_DIR / name[len(SHARED_DIR) + 1 :] if name.startswith(f"{SHARED_DIR}/") else name)
            for name in [*sums, f"{SHARED_DIR}/{SUMS}"]
        }
        clashes = [
            str(target.relative_to(workdir))
            for name, target in targets.items()
            if target.is_file() and sha256_file(target) != sha256_file(staging / name)
        ]
        if clashes:
            raise SharedCacheError(
                f"this directory already has other versions of {len(clashes)} file(s) of the cache "
                f"({', '.join(clashes[:10])}); nothing was written. Use a fresh clone, or move "
                "those files away first."
            )
        for name, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(staging / name, target)  # the packed mtimes: the workflow orders them before planning
    return workdir / UNPACKED_DIR / "config.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clip_robustness.workflow.share", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    unpack_cmd = sub.add_parser("unpack", help="verify a shared cache and put its files in place")
    unpack_cmd.add_argument("cache")
    args = parser.parse_args(argv)
    try:
        config = unpack(args.cache)
    except SharedCacheError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
