"""A plan before the run (``make plan``): jobs, SLURM jobs, images, GPU-hours and disk of the configured study.

Nothing is run. Job counts per rule come from Snakemake's own dry run of every job (``--dry-run --forceall``), so
they are the DAG's; the rest is computed from the config, the registries and the data already on disk:

- SLURM jobs after grouping, from the cluster profile's ``groups`` / ``group-components`` (``localrules`` run on
  the login node and submit nothing);
- images per dataset: the manifest's count when it exists, else the registry's published ``n_images``, capped by
  the ImageNet-C subset (``datasets.imagenet_c.images_per_condition``);
- GPU-hours per model on a chosen GPU: images / forward throughput from ``config/throughput.tsv`` (rows marked
  ``measured`` or ``estimated``; add your own rows for your GPU), a model without a row is listed as unknown;
- disk: archives (registry ``size_bytes``), extracted sets (about the archives' size: JPEG tars barely compress),
  decoded arrays (``n x H x W x 3`` bytes per (dataset, geometry); peak = the budget, or all of them when no budget
  bounds them) and logits (``n x 1000`` float32 at the measured zstd ratio).
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

#: Bytes of one logits row (1000 float32) and the zstd + byte-stream-split ratio measured on the project's platform
#: (136-164 MiB for 50k rows of 191 MiB raw: 0.78 at the upper end).
LOGITS_ROW_BYTES = 1000 * 4
LOGITS_COMPRESSION = 0.86

#: Columns of the throughput table (config/throughput.tsv).
THROUGHPUT_COLUMNS = ["gpu", "library", "architecture", "precision", "images_per_s", "source", "note"]


@dataclass
class Plan:
    """What a run of the configured study costs. Sizes in bytes, times in GPU-hours."""

    jobs_per_rule: dict[str, int]
    slurm_jobs: dict[str, int]
    images: dict[str, tuple[int, str]]  # dataset -> (images, where the count comes from)
    gpu: str
    gpu_hours: dict[str, float | None]  # model -> hours (None: no throughput row)
    throughput_source: dict[str, str]
    disk: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    startup: tuple[int, float, float] = (0, 0.0, 0.0)  # logits jobs, fixed seconds per job, their GPU-hours


#: Fixed cost of one logits job on a GPU node (interpreter, imports, CUDA start-up, model build, weight load):
#: 20.0-22.3 s measured on an H200 node by benchmarks/gpu_check.sh (docs/performance.md, "Job cutting").
MEASURED_JOB_STARTUP_S = 21.0

#: How far measured runs have been from the plan's logits time (measured / predicted), stated with every plan:
#: benchmarks/bench_plan_check.py and bench_group_job.py, docs/performance.md "The plan against measured runs".
PLAN_ERROR_BAND = (
    "checked against measured runs (docs/performance.md, 'The plan against measured runs'): on CPU the demo's logits "
    "stage took 0.67-0.83x the predicted time over three runs (its jobs 0.36-1.32x with this code; 2 shared cores, "
    "forward measured at batch 256); on a GPU "
    "not measured since issue 22: the H200 check before it ran the decoded path at 0.14-0.38x of forward, i.e. 2.6-7x "
    "the forward time the plan counts; benchmarks/gpu_check.sh reports the ratio for four models"
)

#: The rules whose jobs each build a model on a GPU.
LOGITS_RULES = (
    "cache_logits",
    "cache_logits_imagenet_c",
    "cache_logits_zero_shot",
    "cache_logits_zero_shot_imagenet_c",
)

#: Embedding width assumed for a zero-shot model whose library config does not state one (ViT-H/14's; the widest
#: common open_clip towers are 1024-1280), and the size on disk of float16 embeddings over their raw size: 1.0, they
#: do not compress (the demo's seven files: 87 KB for 57 KB raw, the rest being each file's ~4 KB metadata footer).
ASSUMED_EMBEDDING_DIM = 1024
EMBEDDINGS_COMPRESSION = 1.0


def predicted_logits_seconds(images: int, images_per_s: float, jobs: int, job_startup_s: float) -> float:
    """The plan's time for logits work: ``images`` at the forward throughput ``images_per_s`` plus ``jobs`` start-ups
    of ``job_startup_s`` each (the one formula behind the GPU-hours, and what the benchmarks check it against)."""
    if images_per_s <= 0:
        raise ValueError(f"images_per_s must be > 0, got {images_per_s}")
    return images / images_per_s + jobs * job_startup_s


def startup_hours(jobs_per_rule: Mapping[str, int], seconds_per_job: float) -> tuple[int, float]:
    """Logits jobs of a dry run's job table and the GPU-hours their fixed cost adds: ``(jobs, hours)``."""
    jobs = sum(int(jobs_per_rule.get(rule, 0)) for rule in LOGITS_RULES)
    return jobs, jobs * seconds_per_job / 3600


def count_dry_run_jobs(output: str) -> dict[str, int]:
    """Jobs per rule from Snakemake's ``--quiet rules`` job-count table (the ``total`` row dropped)."""
    counts = {}
    for rule, n in re.findall(r"^([A-Za-z_][\w]*)\s+(\d+)\s*$", output, flags=re.M):
        if rule != "total":
            counts[rule] = int(n)
    return counts


def workflow_localrules(rule_files: Sequence[str | Path]) -> list[str]:
    """The rules named in the workflow's ``localrules:`` directives (they run on the submitting host, no SLURM job),
    read from its ``.smk`` files: each directive lists one rule per line, as snakefmt writes it."""
    names: list[str] = []
    for path in rule_files:
        inside = False
        for line in Path(path).read_text().splitlines():
            if re.match(r"^localrules:", line):
                inside = True
                names += [n.strip() for n in line.split(":", 1)[1].split(",") if n.strip()]
            elif inside and (match := re.match(r"^\s+(\w+),?\s*$", line)):
                names.append(match.group(1))
            else:
                inside = False
    return names


def slurm_job_counts(
    jobs_per_rule: Mapping[str, int], profile: Mapping[str, Any], localrules: Sequence[str], n_models: int
) -> dict[str, int]:
    """SLURM jobs per group (or per ungrouped rule) after the profile's grouping.

    A group named with ``{model}`` has one instance per model, holding that model's share of its rules' jobs; other
    groups hold all their rules' jobs. Each instance is cut into jobs of at most ``group-components`` members.
    """
    groups: dict[str, str] = dict(profile.get("groups") or {})
    components: dict[str, int] = {str(k): int(v) for k, v in (profile.get("group-components") or {}).items()}
    members: dict[str, int] = {}
    slurm: dict[str, int] = {}
    for rule, n in jobs_per_rule.items():
        if rule in localrules or n == 0:
            continue
        if rule in groups:
            members[groups[rule]] = members.get(groups[rule], 0) + n
        else:
            slurm[rule] = n
    for group, n in members.items():
        size = max(components.get(group, 1), 1)
        if "{model}" in group and n_models:
            slurm[group] = n_models * math.ceil((n / n_models) / size)
        else:
            slurm[group] = math.ceil(n / size)
    return slurm


def read_throughput(path: str | Path) -> pd.DataFrame:
    """The throughput table; ``ValueError`` naming the file and the missing columns."""
    table = pd.read_csv(path, sep="\t", comment="#", dtype={"images_per_s": float})
    missing = [c for c in THROUGHPUT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {THROUGHPUT_COLUMNS}")
    return table


def throughput_for(
    table: pd.DataFrame, gpu: str, library: str, architecture: str, precision: str
) -> tuple[float, str] | None:
    """(images/s, source) of the last matching row (user rows appended later win), or None."""
    rows = table[
        (table["gpu"] == gpu)
        & (table["library"] == library)
        & (table["architecture"] == architecture)
        & (table["precision"] == precision)
    ]
    if rows.empty:
        return None
    row = rows.iloc[-1]
    return float(row["images_per_s"]), str(row["source"])


def dataset_images(dataset: str, registry_n_images: int | None, manifest: Path, subset: int | None) -> tuple[int, str]:
    """Images of ``dataset``: the manifest's count if built, else the registry's; capped by an ImageNet-C subset."""
    if manifest.exists():
        import json

        import pyarrow.parquet as pq

        metadata = json.loads(pq.read_schema(manifest).metadata[b"clip_robustness"])
        return int(metadata["n_images"]), "manifest"
    if registry_n_images is None:
        return 0, "unknown (no manifest, no registry n_images)"
    n = int(registry_n_images)
    if subset is not None and subset < n:
        return subset, f"registry, subset of {n}"
    return n, "registry"


def human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n_bytes) < 1000 or unit == "PB":
            return f"{n_bytes:,.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1000
    return f"{n_bytes:.1f} PB"


def format_plan(plan: Plan) -> str:
    lines = ["Jobs per rule (the whole DAG, nothing run):"]
    lines += [f"  {rule:40s} {n:8,d}" for rule, n in sorted(plan.jobs_per_rule.items())]
    lines.append(f"  {'total':40s} {sum(plan.jobs_per_rule.values()):8,d}")
    lines.append("SLURM jobs after grouping (profiles/slurm; localrules run on the login node):")
    lines += [f"  {name:40s} {n:8,d}" for name, n in sorted(plan.slurm_jobs.items())]
    lines.append(f"  {'total':40s} {sum(plan.slurm_jobs.values()):8,d}")
    lines.append("Images per dataset:")
    lines += [f"  {d:40s} {n:10,d}  ({src})" for d, (n, src) in plan.images.items()]
    lines.append(f"  {'total':40s} {sum(n for n, _ in plan.images.values()):10,d}")
    lines.append(f"GPU-hours per model on {plan.gpu} (forward throughput from the table; source in brackets):")
    known = 0.0
    for model, hours in plan.gpu_hours.items():
        if hours is None:
            lines.append(f"  {model:52s} unknown: add a row for it to the throughput table")
        else:
            known += hours
            lines.append(f"  {model:52s} {hours:9.3f}  ({plan.throughput_source[model]})")
    unknown = sum(h is None for h in plan.gpu_hours.values())
    lines.append(
        f"  {'total':52s} {known:9.3f}" + (f"  (+ {unknown} model(s) without a throughput row)" if unknown else "")
    )
    jobs, seconds, start = plan.startup
    lines.append(f"  {f'logits job start-up ({jobs:,} jobs x {seconds:g} s)':52s} {start:9.3f}")
    lines.append(f"  {'total with start-up':52s} {known + start:9.3f}")
    lines.append("Disk:")
    lines += [f"  {what:52s} {human(n)}" for what, n in plan.disk.items()]
    lines += [f"Note: {note}" for note in plan.notes]
    return "\n".join(lines)


def deep_merge(base: dict, extra: Mapping) -> dict:
    """``extra`` merged over ``base`` the way Snakemake merges config files (nested mappings merged)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            deep_merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
        )
    return out


# Longer than 60 lines: one pass over the study summing images, GPU-hours, disk and Slurm jobs into one Plan; the sums
# share the per-dataset counts.
def build_plan(
    config: Mapping[str, Any],
    jobs_per_rule: Mapping[str, int],
    profile: Mapping[str, Any],
    throughput: pd.DataFrame,
    gpu: str,
    workdir: Path = Path("."),
    job_startup_s: float = MEASURED_JOB_STARTUP_S,
) -> Plan:
    """The plan of ``config`` (merged, as Snakemake sees it) given the dry run's ``jobs_per_rule``; each logits job
    adds ``job_startup_s`` seconds of fixed cost to the GPU-hours."""
    from clip_robustness.datasets.registry import load_dataset_registry
    from clip_robustness.logits.cutting import LogitsGroups
    from clip_robustness.logits.decoded import decoded_size_bytes
    from clip_robustness.logits.geometry import decode_spec_for_row
    from clip_robustness.models.adapters.errors import UnsupportedPreprocessingError
    from clip_robustness.models.registry import load_model_registry
    from clip_robustness.names import manifest_path
    from clip_robustness.workflow.study import Study

    datasets_registry = load_dataset_registry(workdir / config["dataset_registry"])
    models_registry = load_model_registry(workdir / config["model_registry"])
    study = Study.from_config(config, datasets_registry, models_registry)
    groups = LogitsGroups.from_study(
        study.dataset_ids,
        config["datasets"].get("imagenet_c"),
        cut=config["inference"].get("imagenet_c_jobs", "per_severity"),
    )
    c_ids = set(groups.all_imagenet_c_ids())
    subset = (config["datasets"].get("imagenet_c") or {}).get("images_per_condition")
    images = {}
    for dataset in study.dataset_ids:
        entry = datasets_registry.resolve(dataset)
        images[dataset] = dataset_images(
            dataset, entry.n_images, workdir / manifest_path(dataset), subset if dataset in c_ids else None
        )
    total_images = sum(n for n, _ in images.values())
    precision = config["inference"]["precision"]
    hours: dict[str, float | None] = {}
    sources: dict[str, str] = {}
    geometries: dict[str, tuple[int, int]] = {}
    for model in study.model_ids:
        row = models_registry.row(model)
        found = throughput_for(throughput, gpu, str(row["library"]), str(row["architecture"]), precision)
        hours[model] = None if found is None else predicted_logits_seconds(total_images, found[0], 0, 0.0) / 3600
        sources[model] = "" if found is None else f"{found[0]:,.0f} img/s, {found[1]}"
        if config["inference"].get("decoded_cache", True):
            try:
                spec = decode_spec_for_row(row)
                geometries[spec.key] = spec.input_size
            except UnsupportedPreprocessingError:
                pass
    archives: set[str] = set()
    local = config["downloads"].get("local_folders") or {}
    for dataset in study.dataset_ids:
        entry = datasets_registry.resolve(dataset)
        if dataset not in local:
            archives.update(entry.archives)
        archives.update(getattr(entry, "label_archives", ()))
    sized = [datasets_registry.archive(a).size_bytes for a in sorted(archives)]
    archive_bytes = sum(s for s in sized if s)
    decoded = {
        key: sum(decoded_size_bytes(images[d][0], size) for d in study.dataset_ids) for key, size in geometries.items()
    }
    largest_group = max(
        (
            sum(decoded_size_bytes(images[d][0], size) for d in datasets)
            for size in geometries.values()
            for datasets in groups.groups().values()
        ),
        default=0,
    )
    logits_per_model = total_images * LOGITS_ROW_BYTES * LOGITS_COMPRESSION
    budget_gb = config["inference"].get("decoded_budget_gb")
    keep = config["inference"].get("keep_decoded", False)
    total_decoded = sum(decoded.values())
    peak_decoded = total_decoded if keep or budget_gb is None else min(total_decoded, int(budget_gb * 1e9))
    disk = {
        f"archives ({len(archives)}; {sum(s is None for s in sized)} without a registry size)": archive_bytes,
        "extracted sets (about the archives' size)": archive_bytes,
        f"decoded arrays, all ({len(geometries)} geometries)": total_decoded,
        "decoded arrays, peak"
        + (
            " (keep_decoded: all kept)"
            if keep
            else " (no decoded_budget_gb: not bounded)"
            if budget_gb is None
            else f" (decoded_budget_gb {budget_gb})"
        ): peak_decoded,
        "decoded arrays, largest decode group (the least workable budget)": largest_group,
        "logits per model": int(logits_per_model),
        f"logits, all {len(study.model_ids)} models": int(logits_per_model * len(study.model_ids)),
    }
    embedding_bytes, assumed = embeddings_disk(config, study.model_ids, models_registry, total_images)
    if config["inference"].get("cache_embeddings", True):
        disk[f"image embeddings, {sum(1 for _ in embedding_bytes)} zero-shot models (float16)"] = sum(
            embedding_bytes.values()
        )
    notes = [
        "GPU-hours count forward passes at the table's throughput plus each logits job's start-up (--job-startup-s; "
        f"{MEASURED_JOB_STARTUP_S:g} s measured on an H200 node); decoding runs on CPU nodes. Estimated rows are "
        "parameter-count guesses, not measurements.",
        f"The plan's logits time is {PLAN_ERROR_BAND}.",
    ]
    if assumed:
        notes.append(
            f"embedding width unknown for {len(assumed)} zero-shot model(s) (e.g. {assumed[0]}): "
            f"{ASSUMED_EMBEDDING_DIM} assumed"
        )
    if budget_gb is not None and budget_gb * 1e9 < largest_group:
        notes.append(
            f"decoded_budget_gb {budget_gb} is below the largest decode group ({human(largest_group)}): "
            "that decode job would fail at once"
        )
    # `all` is a target, not a job; the workflow's localrules run on the login node
    logits_jobs, startup_gpu_hours = startup_hours(jobs_per_rule, job_startup_s)
    localrules = ["all", *workflow_localrules(sorted((workdir / "workflow/rules").glob("*.smk")))]
    slurm = slurm_job_counts(jobs_per_rule, profile, localrules, len(study.model_ids))
    return Plan(
        jobs_per_rule=dict(jobs_per_rule),
        slurm_jobs=slurm,
        images=images,
        gpu=gpu,
        gpu_hours=hours,
        throughput_source=sources,
        disk=disk,
        notes=notes,
        startup=(logits_jobs, job_startup_s, startup_gpu_hours),
    )


def embeddings_disk(
    config: Mapping[str, Any], model_ids: Sequence[str], models_registry: Any, total_images: int
) -> tuple[dict[str, int], list[str]]:
    """Bytes of each zero-shot model's embeddings cache (config ``inference.cache_embeddings``; ``{}`` when off):
    ``total_images x (2 x embed_dim + 6)`` at :data:`EMBEDDINGS_COMPRESSION`, and the models whose width was assumed
    (:data:`ASSUMED_EMBEDDING_DIM`)."""
    from clip_robustness.logits.embeddings import embeddings_bytes_per_image
    from clip_robustness.models.adapters import row_adapter

    if not config["inference"].get("cache_embeddings", True):
        return {}, []
    sizes, assumed = {}, []
    for model in model_ids:
        if not models_registry.is_zero_shot(model):
            continue
        row = models_registry.row(model)
        try:
            dim = row_adapter(row).embedding_dim(row)
        except Exception:  # a library not installed where the plan runs: the width is assumed, and said so
            dim = None
        if dim is None:
            assumed.append(model)
            dim = ASSUMED_EMBEDDING_DIM
        sizes[model] = int(total_images * embeddings_bytes_per_image(dim) * EMBEDDINGS_COMPRESSION)
    return sizes, assumed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the plan of the configured study without running anything.")
    parser.add_argument("--configfile", nargs="*", default=[], help="config files merged over config.yaml")
    parser.add_argument("--gpu", default="H100", help="GPU name of the throughput table rows to use")
    parser.add_argument("--throughput", type=Path, default=Path("config/throughput.tsv"))
    parser.add_argument(
        "--job-startup-s",
        type=float,
        default=MEASURED_JOB_STARTUP_S,
        help="fixed cost of one logits job on your GPU nodes, seconds (benchmarks/bench_job_startup.py)",
    )
    parser.add_argument("--profile", type=Path, default=Path("profiles/slurm/config.yaml"))
    parser.add_argument("--snakemake", default=str(Path(sys.executable).with_name("snakemake")))
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path("config.yaml").read_text())
    for extra in args.configfile:
        config = deep_merge(config, yaml.safe_load(Path(extra).read_text()))
    configfiles = ["--configfile", *args.configfile] if args.configfile else []
    dry = subprocess.run(
        [args.snakemake, *configfiles, "--dry-run", "--forceall", "--quiet", "rules", "--cores", "1"],
        capture_output=True,
        text=True,
    )
    if dry.returncode != 0:
        sys.stderr.write(dry.stdout[-3000:] + dry.stderr[-3000:])
        sys.stderr.write("make plan: the dry run failed (above); fix the config first\n")
        return dry.returncode
    jobs = count_dry_run_jobs(dry.stdout + dry.stderr)
    profile = yaml.safe_load(args.profile.read_text()) if args.profile.exists() else {}
    plan = build_plan(
        config, jobs, profile, read_throughput(args.throughput), args.gpu, job_startup_s=args.job_startup_s
    )
    print(format_plan(plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
