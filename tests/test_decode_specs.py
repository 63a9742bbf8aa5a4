"""The decode-spec table (clip_robustness.logits.specs): the shipped table is what live derivation gives, and the
workflow's LogitsPlan reads it instead of importing the libraries."""

from __future__ import annotations

import json
from pathlib import Path

from clip_robustness.logits.geometry import decode_spec_for_row
from clip_robustness.logits.specs import (
    SPEC_TABLE_NAME,
    current_stamp,
    read_spec_table,
    table_key,
    write_spec_table,
)
from clip_robustness.logits.workflow import LogitsPlan
from clip_robustness.models.registry import load_model_registry

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "config" / "models.tsv"


def test_shipped_table_equals_live_derivation_for_every_registry_row():
    table = read_spec_table(REGISTRY.with_name(SPEC_TABLE_NAME))
    registry = load_model_registry(REGISTRY)
    rows = [registry.row(m) for m in registry.ids]
    tabled = [row for row in rows if table_key(row) is not None]

    assert table, (
        f"{SPEC_TABLE_NAME} is missing or stamped with other versions than {current_stamp()}; regenerate: "
        "PYTHONPATH=src python -m clip_robustness.logits.specs config/models.tsv"
    )
    assert len(tabled) == len(rows)  # every study model is a timm or open_clip row without a local file
    for row in tabled:
        assert table[table_key(row)] == decode_spec_for_row(row), row["model_id"]


def test_plan_takes_a_tabled_spec_and_derives_the_rest(tmp_path):
    registry = load_model_registry(REGISTRY)
    tabled_id, live_id = registry.ids[0], registry.ids[1]
    real = decode_spec_for_row(registry.row(tabled_id))
    planted = type(real)(**{**real.__dict__, "key": "7x7-planted-0123456789"})
    path = write_spec_table(tmp_path / SPEC_TABLE_NAME, {table_key(registry.row(tabled_id)): planted})

    plan = LogitsPlan(registry, [tabled_id, live_id], decoded_cache=True, spec_table=read_spec_table(path))

    assert plan.decode_spec(tabled_id).key == "7x7-planted-0123456789"  # read, not derived
    assert plan.decode_spec(live_id) == decode_spec_for_row(registry.row(live_id))  # not in the table: derived


def test_a_table_of_other_library_versions_is_not_used(tmp_path):
    registry = load_model_registry(REGISTRY)
    row = registry.row(registry.ids[0])
    path = write_spec_table(tmp_path / SPEC_TABLE_NAME, {table_key(row): decode_spec_for_row(row)})
    data = json.loads(path.read_text())
    data["stamp"]["timm"] = "0.0.1"
    path.write_text(json.dumps(data))

    assert read_spec_table(path) == {}
    assert read_spec_table(tmp_path / "absent.json") == {}


def test_local_weights_files_and_python_models_are_never_tabled():
    assert (
        table_key({"library": "timm", "architecture": "resnet50", "pretrained": "a1_in1k"}) == "timm|resnet50|a1_in1k"
    )
    assert table_key({"library": "timm", "architecture": "resnet50", "pretrained": "", "weights_file": "w.pth"}) is None
    assert table_key({"library": "python", "architecture": "pkg.mod:factory", "pretrained": ""}) is None
