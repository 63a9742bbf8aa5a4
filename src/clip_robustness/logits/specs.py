"""The decode-spec table shipped beside the model registry, read without torch (the :class:`DecodeSpec` record:
:mod:`clip_robustness.logits.geometry`).

Deriving a model's preprocessing geometry (:func:`clip_robustness.logits.geometry.decode_spec_for_row`) builds the
library's evaluation transform, so it imports torch, timm and open_clip, a cost every Snakemake start (dry runs
included) would pay (docs/performance.md). ``config/decode_specs.json`` holds the specs of the registry's timm and
open_clip rows, keyed by ``library|architecture|pretrained`` and stamped with the versions they were derived
with (timm, open_clip, torchvision, this package); the workflow reads it and derives live only what it lacks
(a new row, a local ``weights_file``, a ``python`` model) or everything when a version differs. Nothing here
imports torch.

A stale entry cannot pass silently: each logits job re-derives the key from the model it built and refuses a
mismatch (:class:`~clip_robustness.logits.decoded.StaleDecodedCacheError`), and the test suite compares every entry
with a live derivation. Regenerate after changing the registry or a library version::

    PYTHONPATH=src python -m clip_robustness.logits.specs config/models.tsv --out config/decode_specs.json
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from clip_robustness.logits.geometry import DecodeSpec, decode_spec_for_row
from clip_robustness.models.adapters import ADAPTERS
from clip_robustness.models.adapters.errors import UnsupportedPreprocessingError

log = logging.getLogger(__name__)

#: File name of the spec table, beside the model registry (``config/models.tsv`` -> ``config/decode_specs.json``).
SPEC_TABLE_NAME = "decode_specs.json"

#: Libraries whose specs the table holds: their geometry follows from (architecture, pretrained tag) alone (the
#: adapters' ``tabled_decode_spec``).
TABLED_LIBRARIES = tuple(name for name, adapter in ADAPTERS.items() if adapter.tabled_decode_spec)

#: Distributions whose versions stamp the table (a spec depends on their transform code and configs; the tabled
#: adapters' ``spec_stamp_distributions``).
STAMP_PACKAGES = tuple(
    dict.fromkeys(package for name in TABLED_LIBRARIES for package in ADAPTERS[name].spec_stamp_distributions)
)


def table_key(row: Mapping[str, Any]) -> str | None:
    """``row``'s key in the spec table, or ``None`` when its spec must be derived live: another library than
    :data:`TABLED_LIBRARIES`, or a local ``weights_file`` (its preprocessing may differ from the tag's)."""
    library = str(row.get("library") or "")
    if library not in TABLED_LIBRARIES or str(row.get("weights_file") or ""):
        return None
    return f"{library}|{row.get('architecture') or ''}|{row.get('pretrained') or ''}"


def current_stamp() -> dict[str, str]:
    """The versions a table must have been derived with to be used now (installed distributions, this package)."""
    from clip_robustness import PIPELINE_VERSION

    stamp = {"clip_robustness": PIPELINE_VERSION}
    for package in STAMP_PACKAGES:
        try:
            stamp[package] = version(package)
        except PackageNotFoundError:
            stamp[package] = "not installed"
    return stamp


def read_spec_table(path: str | Path) -> dict[str, DecodeSpec]:
    """The specs of the table at ``path``; ``{}`` (everything derived live) when there is no such file or it was
    derived with other versions than the installed ones (logged, naming the difference)."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    stamp, now = data.get("stamp") or {}, current_stamp()
    if stamp != now:
        changed = sorted(k for k in set(stamp) | set(now) if stamp.get(k) != now.get(k))
        log.info(
            "%s was derived with other versions (%s: %s, installed %s); decode specs are derived live",
            path,
            ", ".join(changed),
            [stamp.get(k) for k in changed],
            [now.get(k) for k in changed],
        )
        return {}
    return {key: DecodeSpec.from_json(entry) for key, entry in (data.get("specs") or {}).items()}


def derive_spec_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, DecodeSpec]:
    """Live specs of every tabled row (:func:`table_key`) whose transform the decoded cache can hold."""
    specs: dict[str, DecodeSpec] = {}
    for row in rows:
        key = table_key(row)
        if key is None or key in specs:
            continue
        try:
            specs[key] = decode_spec_for_row(row)
        except UnsupportedPreprocessingError as error:
            log.warning("%s: not tabled (%s)", row.get("model_id"), error)
    return specs


def write_spec_table(path: str | Path, specs: Mapping[str, DecodeSpec]) -> Path:
    """Write ``specs`` with the current version stamp to ``path`` (sorted keys: a stable, reviewable diff)."""
    path = Path(path)
    lines = [f" {json.dumps(key)}: {json.dumps(specs[key].to_json(), sort_keys=True)}" for key in sorted(specs)]
    path.write_text(
        '{"stamp": ' + json.dumps(current_stamp(), sort_keys=True) + ',\n"specs": {\n' + ",\n".join(lines) + "\n}}\n"
    )  # one spec per line: a reviewable diff
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Derive the decode-spec table of a model registry.")
    parser.add_argument("registry", type=Path, help="model registry TSV (config/models.tsv)")
    parser.add_argument("--out", type=Path, help=f"output (default: {SPEC_TABLE_NAME} beside the registry)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from clip_robustness.models.registry import load_model_registry

    registry = load_model_registry(args.registry)
    rows = [registry.row(model_id) for model_id in registry.ids]
    out = write_spec_table(args.out or args.registry.with_name(SPEC_TABLE_NAME), derive_spec_table(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
