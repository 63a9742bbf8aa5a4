"""Add a user's own model to the model registry as one validated row (``study`` = ``own``).

Usage (from the repository root; ``make add-model`` wraps it)::

    python -m clip_robustness.models.add_model MODEL --group GROUP --training-source SOURCE
        [--training-size N] [--finetune-route ROUTE] [--architecture-family FAMILY]
        [--weights FILE] [--tag TAG] [--model-id ID] [--registry PATH | --config CONFIG]

``MODEL`` names the model the way its library does (each adapter's ``cli_usage``; today):

- ``timm:ARCH.TAG`` a pretrained timm checkpoint (``timm.list_pretrained()``), or ``timm:ARCH`` with ``--weights``;
- ``open_clip:ARCH:TAG`` a pretrained open_clip ``(model, pretrained)`` pair (``open_clip.list_pretrained()``),
  or ``open_clip:ARCH`` with ``--weights``;
- ``hf-hub:ORG/REPO`` a Hugging Face hub repo that the pinned timm or open_clip lists as a pretrained
  checkpoint (resolved to its library name and tag; other hub repos: download the file, use ``--weights``).

``--weights FILE`` is a local weights file (safetensors or a torch state dict) of a known architecture; it is
loaded once into that architecture through the library's own loader, so a file that does not fit is refused
now, not on a GPU node. The row goes to ``--registry`` (default: the ``model_registry`` of ``--config``,
``config.yaml``); a registry without a ``study`` column gets one (the existing rows stay the paper's).
Every problem is reported with the field it concerns, and nothing is written then.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clip_robustness.models.adapters import ADAPTERS, HUB_CLI_PREFIX, adapter_for
from clip_robustness.models.adapters.errors import ModelBuildError
from clip_robustness.models.registry import (
    GROUPS,
    MODEL_COLUMNS,
    OWN_STUDY,
    REGISTRY_COLUMNS,
    UNKNOWN,
    RegistryError,
    check_registry_against_libraries,
    load_model_registry,
    model_id_for,
)

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class AddModelError(ValueError):
    """The requested row is invalid; the message names the problem and the field."""


@dataclass(frozen=True)
class ModelSpec:
    """What ``MODEL`` names: the library, its architecture name and the pretrained tag (``""``: none given)."""

    library: str
    architecture: str
    tag: str


def _cli_adapters() -> list[str]:
    """The libraries ``make add-model`` takes (those whose adapter has a command-line spelling), in table order."""
    return [name for name, adapter in ADAPTERS.items() if adapter.cli_separator is not None]


def model_usage() -> str:
    """How ``MODEL`` may be written: each library's spelling, then a hub repo."""
    return ", ".join(ADAPTERS[name].cli_usage() for name in _cli_adapters()) + f" or {HUB_CLI_PREFIX}:ORG/REPO"


def _hub_spec(text: str, repo_id: str) -> ModelSpec:
    """The checkpoint of hub repo ``repo_id`` among every adapter's, the lowest ``hub_rank`` first (then table order)."""
    found = [
        (adapter.hub_rank(architecture), ModelSpec(name, architecture, tag))
        for name, adapter in ADAPTERS.items()
        for architecture, tag in adapter.hub_checkpoints(repo_id)
    ]
    if not found:
        raise AddModelError(
            f"MODEL {text!r}: the hub repo {repo_id!r} is not a pretrained checkpoint of the pinned libraries "
            f"({', '.join(_cli_adapters())}); download its weights file and add it with --weights FILE and LIBRARY:ARCH"
        )
    return min(found, key=lambda ranked: ranked[0])[1]


def parse_model(text: str) -> ModelSpec:
    """The library, architecture and tag named by a ``MODEL`` argument (see the module docstring)."""
    library, sep, rest = text.partition(":")
    if library == HUB_CLI_PREFIX and sep:
        return _hub_spec(text, rest.strip("/"))
    if library in _cli_adapters() and sep:
        return ModelSpec(library, *ADAPTERS[library].parse_cli(rest))
    raise AddModelError(f"MODEL {text!r}: expected {model_usage()} (libraries: {', '.join(ADAPTERS)})")


def library_resolution(spec: ModelSpec) -> int:
    """The input size (pixels) the library configures for the architecture (and tag)."""
    try:
        return adapter_for(spec.library).library_input_size(spec.architecture, spec.tag)
    except ModelBuildError as error:
        raise AddModelError(str(error)) from error


def build_row(
    spec: ModelSpec,
    *,
    group: str,
    training_source: str,
    training_size: int | None,
    finetune_route: str,
    architecture_family: str,
    weights: str = "",
    tag: str = "",
    model_id: str = "",
) -> dict[str, str]:
    """The registry row (text fields, ``study`` = ``own``) for ``spec``; raises :class:`AddModelError` naming
    the field for a value the registry would refuse."""
    spec = ModelSpec(spec.library, *adapter_for(spec.library).canonical_checkpoint(spec.architecture, spec.tag))
    if group not in GROUPS:
        raise AddModelError(f"--group {group!r}: expected one of {', '.join(GROUPS)}")
    if not training_source.strip():
        raise AddModelError("--training-source: empty; name the (pre)training data, or 'unknown'")
    if training_size is None:
        if training_source != UNKNOWN:
            raise AddModelError(
                f"--training-size: required for --training-source {training_source!r} "
                "(number of training images, the nominal published size)"
            )
        training_size = 0
    if training_size < 0 or (training_size == 0 and training_source != UNKNOWN):
        raise AddModelError(f"--training-size {training_size}: must be a positive integer")
    pretrained = spec.tag
    if weights:
        pretrained = tag or pretrained or re.sub(r"[^A-Za-z0-9._+-]", "_", Path(weights).name.split(".")[0])
    elif not spec.tag:
        raise AddModelError(
            f"MODEL {spec.library}:{spec.architecture}: no pretrained tag; give one "
            f"({spec.library}:ARCH{adapter_for(spec.library).cli_separator}TAG) or a local weights "
            "file with --weights"
        )
    if not _TAG.match(pretrained):
        raise AddModelError(f"--tag {pretrained!r}: letters, digits, '.', '_', '+', '-' only")
    row = {
        "model_id": model_id or model_id_for(spec.library, spec.architecture, pretrained),
        "library": spec.library,
        "architecture": spec.architecture,
        "pretrained": pretrained,
        "group": group,
        "training_source": training_source,
        "training_size": str(training_size),
        "finetune_route": finetune_route,
        "architecture_family": architecture_family,
        "resolution": str(library_resolution(spec)),
        "weights_file": weights,
        "study": OWN_STUDY,
    }
    empty = [name for name in ("finetune_route", "architecture_family") if not row[name].strip()]
    if empty:
        raise AddModelError(f"--{empty[0].replace('_', '-')}: empty")
    return row


def _registry_lines(registry: Path) -> list[str]:
    try:
        return registry.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise AddModelError(f"--registry {registry}: cannot read it ({error.strerror or error})") from error


def appended_text(registry: Path, row: dict[str, str]) -> str:
    """The registry file's text with ``row`` appended (and a ``study`` column added to its header if missing)."""
    lines = _registry_lines(registry)
    if not lines:
        raise AddModelError(f"--registry {registry}: the file is empty")
    header = lines[0].split("\t")
    if "study" not in header:
        lines[0] += "\tstudy"
        header.append("study")
    unknown = [name for name in header if name not in REGISTRY_COLUMNS]
    if unknown:
        raise AddModelError(f"--registry {registry}: unknown column(s) {', '.join(unknown)}")
    lines.append("\t".join(row.get(name, "") for name in header))
    return "\n".join(lines) + "\n"


def validate(registry: Path, text: str, row: dict[str, str]) -> None:
    """Refuse ``row`` unless the registry with it loads, the new row resolves in the pinned libraries and a
    local weights file loads into its architecture. Raises :class:`AddModelError` naming the problem."""
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / registry.name
        candidate.write_text(text, encoding="utf-8")
        try:
            table = load_model_registry(candidate)
        except RegistryError as error:
            raise AddModelError(str(error).replace(str(candidate), str(registry))) from error
        single = Path(tmp) / "new.tsv"
        single.write_text("\t".join(REGISTRY_COLUMNS) + "\n" + "\t".join(row[c] for c in REGISTRY_COLUMNS) + "\n")
        problems = check_registry_against_libraries(load_model_registry(single))
    if problems:
        raise AddModelError("; ".join(p.replace(str(single), str(registry)) for p in problems))
    if row["weights_file"]:
        from clip_robustness.models.build import build_model

        try:
            build_model({c: row[c] for c in MODEL_COLUMNS}, "cpu")
        except Exception as error:
            raise AddModelError(
                f"--weights {row['weights_file']}: does not load into {row['library']} {row['architecture']!r}: "
                f"{type(error).__name__}: {str(error)[:500]}"
            ) from error
    del table


def add_model(registry: Path, row: dict[str, str]) -> None:
    """Validate ``row`` and append it to ``registry`` (atomically); nothing is written if it is refused."""
    from clip_robustness.workflow.io import atomic_path

    text = appended_text(registry, row)
    validate(registry, text, row)
    with atomic_path(registry) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _configured_registry(config: Path) -> Path:
    import yaml

    try:
        return Path(yaml.safe_load(config.read_text())["model_registry"])
    except (OSError, KeyError, TypeError) as error:
        raise AddModelError(f"--config {config}: cannot read its model_registry ({error})") from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clip_robustness.models.add_model",
        description="Append a validated row for your own model to the model registry.",
    )
    parser.add_argument("model", help=model_usage())
    parser.add_argument("--group", required=True, help=f"one of {', '.join(GROUPS)}")
    parser.add_argument("--training-source", required=True, help="(pre)training data, e.g. ImageNet-1k, LAION-2B")
    parser.add_argument("--training-size", type=int, help="training images (nominal published size)")
    parser.add_argument("--finetune-route", default="none", help="none, in1k, in12k->in1k, in22k->in1k (default none)")
    parser.add_argument(
        "--architecture-family",
        help="ResNet, ViT, ConvNeXt, ... (default: from the registry's rows of the same architecture)",
    )
    parser.add_argument("--weights", default="", help="a local weights file of the architecture")
    parser.add_argument("--tag", default="", help="the pretrained label of a local weights file (default: its name)")
    parser.add_argument(
        "--model-id",
        default="",
        help="default: " + " / ".join(ADAPTERS[name].model_id("ARCH", "TAG") for name in _cli_adapters()),
    )
    parser.add_argument("--registry", type=Path, help="registry TSV to append to (default: model_registry of --config)")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    args = parser.parse_args(argv)
    try:
        registry = args.registry or _configured_registry(args.config)
        spec = parse_model(args.model)
        if args.group not in GROUPS:
            raise AddModelError(f"--group {args.group!r}: expected one of {', '.join(GROUPS)}")
        family = args.architecture_family or _family_from(registry, spec)
        row = build_row(
            spec,
            group=args.group,
            training_source=args.training_source,
            training_size=args.training_size,
            finetune_route=args.finetune_route,
            architecture_family=family,
            weights=args.weights,
            tag=args.tag,
            model_id=args.model_id,
        )
        add_model(registry, row)
    except AddModelError as error:
        print(f"add_model: refused: {error}", file=sys.stderr)
        return 2
    print(
        f"{registry}: added {row['model_id']} ({row['library']} {row['architecture']}, {row['pretrained']}, "
        f"group {row['group']}, study own)"
    )
    return 0


def _family_from(registry: Path, spec: ModelSpec) -> str:
    """The architecture family the registry already gives this architecture (``""`` if none)."""
    try:
        table = load_model_registry(registry).table
    except RegistryError as error:
        raise AddModelError(str(error)) from error
    key = adapter_for(spec.library).family_key(spec.architecture)
    keys = [
        adapter_for(library).family_key(architecture)
        for library, architecture in zip(table["library"], table["architecture"])
    ]
    same = table.loc[[k == key for k in keys], "architecture_family"]
    if same.empty:
        raise AddModelError(f"--architecture-family: required ({spec.architecture!r} is not in {registry})")
    return str(same.iloc[0])


if __name__ == "__main__":
    sys.exit(main())
