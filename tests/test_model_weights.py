"""Weights fetched on a node with internet are found on an offline one (clip_robustness.models.weights).

The internet is a local stand-in for the Hugging Face hub on 127.0.0.1 (tests/hub_standin.py) serving
weights saved from the real timm / open_clip constructors; every fetch and load runs in a subprocess
with its own ``HF_HOME`` (huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` at import).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_standin import HubStandIn

TIMM_ROW = {
    "model_id": "timm__test_resnet.r160_in1k",
    "library": "timm",
    "architecture": "test_resnet",
    "pretrained": "r160_in1k",
    "weights_file": "",
}
OPEN_CLIP_ROW = {
    "model_id": "openclip__RN50-quickgelu__openai",
    "library": "open_clip",
    "architecture": "RN50-quickgelu",
    "pretrained": "openai",
    "weights_file": "",
}


def run_python(code: str, hf_home: Path, endpoint: str | None = None, offline: bool = False) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter; returns that JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(hf_home)
    env["TORCH_HOME"] = str(hf_home / "torch")
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fetch_code(row: dict) -> str:
    return (
        "import json\nfrom clip_robustness.models.weights import fetch_weights\n"
        f"print(json.dumps(fetch_weights({row!r})))\n"
    )


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory) -> tuple[Path, dict]:
    """A hub folder with timm's test_resnet checkpoint (random weights of the real constructor, saved as
    safetensors) under its real repo id, and the saved tensors' checksums by name."""
    import timm
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("hub")
    model = timm.create_model("test_resnet", pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    repo = root / "timm" / "test_resnet.r160_in1k"
    repo.mkdir(parents=True)
    save_file(state, repo / "model.safetensors")
    sums = {k: float(v.double().sum()) for k, v in state.items() if v.is_floating_point()}
    return root, sums


def test_timm_checkpoint_fetched_from_the_hub_builds_offline_with_the_served_weights(timm_weights, tmp_path):
    root, sums = timm_weights
    with HubStandIn(root) as hub:
        record = run_python(fetch_code(TIMM_ROW), tmp_path, endpoint=hub.endpoint)
    [entry] = record["files"]
    assert entry["source"].startswith(f"{hub.endpoint}/timm/test_resnet.r160_in1k/resolve/")
    assert entry["source"].endswith("/model.safetensors")
    served = (root / "timm/test_resnet.r160_in1k/model.safetensors").read_bytes()
    assert entry["sha256"] == hashlib.sha256(served).hexdigest() and entry["size"] == len(served)
    assert Path(entry["file"]).is_relative_to(tmp_path / "hub")

    loaded = run_python(
        "import json\nfrom clip_robustness.models.build import build_model\n"
        f"model, _, info = build_model({TIMM_ROW!r}, 'cpu')\n"
        "print(json.dumps({k: float(v.double().sum()) for k, v in model.state_dict().items() "
        "if v.is_floating_point()}))\n",
        tmp_path,
        offline=True,
    )
    assert loaded == pytest.approx(sums)


def test_open_clip_checkpoint_fetched_from_the_hub_is_where_open_clip_looks_offline(tmp_path):
    import open_clip
    import torch
    from safetensors.torch import save_file

    hub_id = open_clip.get_pretrained_cfg("RN50-quickgelu", "openai")["hf_hub"].strip("/")
    repo = tmp_path / "served" / hub_id
    repo.mkdir(parents=True)
    # open_clip prefers the safetensors alternative of its default open_clip_pytorch_model.bin.
    save_file({"weight": torch.arange(6.0)}, repo / "open_clip_model.safetensors")
    with HubStandIn(tmp_path / "served") as hub:
        record = run_python(fetch_code(OPEN_CLIP_ROW), tmp_path / "home", endpoint=hub.endpoint)
    [entry] = record["files"]
    assert entry["source"].startswith(f"{hub.endpoint}/{hub_id}/resolve/")
    found = run_python(
        "import json, open_clip\n"
        "print(json.dumps(open_clip.download_pretrained(open_clip.get_pretrained_cfg('RN50-quickgelu', 'openai'))))\n",
        tmp_path / "home",
        offline=True,
    )
    assert Path(found).resolve() == Path(entry["file"])


def test_checkpoint_missing_on_the_hub_fails_naming_the_model_and_the_repo(tmp_path):
    (tmp_path / "served").mkdir()
    code = (
        "from clip_robustness.models.weights import fetch_weights, WeightsFetchError\n"
        f"try:\n    fetch_weights({TIMM_ROW!r})\nexcept WeightsFetchError as e:\n"
        "    import json; print(json.dumps(str(e)))\n"
    )
    with HubStandIn(tmp_path / "served") as hub:
        message = run_python(code, tmp_path / "home", endpoint=hub.endpoint)
    assert "'timm__test_resnet.r160_in1k'" in message and "timm/test_resnet.r160_in1k" in message


def test_local_weights_file_is_recorded_with_its_size_and_sha256_and_nothing_fetched(tmp_path):
    from clip_robustness.models.weights import LOCAL_SOURCE, fetch_weights

    weights = tmp_path / "mine.safetensors"
    weights.write_bytes(b"not really weights, but bytes to hash")
    record = fetch_weights(
        {**TIMM_ROW, "model_id": "timm__test_resnet.mine", "pretrained": "mine", "weights_file": str(weights)}
    )
    assert record["files"] == [
        {
            "file": str(weights.resolve()),
            "size": weights.stat().st_size,
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "source": LOCAL_SOURCE,
        }
    ]


def test_missing_local_weights_file_fails_naming_the_model_and_the_file(tmp_path):
    from clip_robustness.models.weights import WeightsFetchError, fetch_weights

    with pytest.raises(WeightsFetchError, match=r"'timm__test_resnet\.mine'.*nowhere\.safetensors"):
        fetch_weights(
            {**TIMM_ROW, "model_id": "timm__test_resnet.mine", "weights_file": str(tmp_path / "nowhere.safetensors")}
        )


def test_missing_weights_files_stop_only_scheduled_models_naming_each_file(tmp_path):
    from clip_robustness.models.weights import missing_weights_files, missing_weights_message

    present = tmp_path / "present.safetensors"
    present.write_bytes(b"w")
    rows = {
        "a": {**TIMM_ROW, "model_id": "a", "weights_file": str(tmp_path / "gone.safetensors")},
        "b": {**TIMM_ROW, "model_id": "b", "weights_file": str(present)},
        "c": {**TIMM_ROW, "model_id": "c", "weights_file": str(tmp_path / "also_gone.safetensors")},
        "hub": TIMM_ROW,
    }
    missing = missing_weights_files(rows)

    assert missing == {"a": str(tmp_path / "gone.safetensors"), "c": str(tmp_path / "also_gone.safetensors")}
    assert missing_weights_message(missing, ["b", "hub"]) is None  # nothing of theirs to run: no reason to stop
    message = missing_weights_message(missing, ["a", "b"])
    assert message.startswith("Before any job") and f"model 'a' expects {tmp_path / 'gone.safetensors'}" in message
    assert "'c'" not in message and "--keep-going" in message


def test_offline_node_without_the_weights_in_its_cache_names_the_model_before_any_job(tmp_path):
    code = (
        "import json\nfrom clip_robustness.models.weights import unfetchable_offline, unfetchable_message\n"
        f"found = unfetchable_offline({{'hub': {TIMM_ROW!r}, 'random': {{**{TIMM_ROW!r}, 'pretrained': ''}},"
        f" 'local': {{**{TIMM_ROW!r}, 'weights_file': 'gone.safetensors'}}}})\n"
        "print(json.dumps({'found': found, 'message': unfetchable_message(found)}))\n"
    )
    answer = run_python(code, tmp_path / "empty_home", offline=True)
    assert list(answer["found"]) == ["hub"]  # a local file is missing_weights_files' business; random weights need none
    assert "'timm__test_resnet.r160_in1k'" in answer["message"] and "timm/test_resnet.r160_in1k" in answer["message"]
    assert answer["message"].startswith("Before any job") and "--until fetch_model_weights" in answer["message"]
    online = run_python(code, tmp_path / "empty_home")  # online, the fetch job downloads them: no reason to stop
    assert online["found"] == {} and online["message"] is None
