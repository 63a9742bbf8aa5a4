"""The decoded-array disk budget (clip_robustness.logits.budget): decode jobs wait for space, never exceed it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from clip_robustness.logits.budget import (
    BUDGET_DIR,
    DecodedBudgetError,
    alive_bytes,
    live_reservations,
    reserve,
)


def write_array(root, dataset, n_bytes):
    """A finished decoded array of ``n_bytes`` pixels (a real .npy file) under ``root``."""
    path = root / dataset / "8x8-bicubic-0123456789.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.zeros(n_bytes, dtype=np.uint8))
    return path


def ledger(root):
    return [json.loads(line) for line in (root / BUDGET_DIR / "ledger.jsonl").read_text().splitlines()]


def test_group_larger_than_the_budget_fails_at_once_naming_both_sizes(tmp_path):
    with pytest.raises(
        DecodedBudgetError, match=r"need .*2,000 bytes.*more than inference.decoded_budget_gb .*1,000 bytes"
    ):
        with reserve(tmp_path, 2000, 1000, "decode core"):
            pass


def test_reservation_waits_until_a_consumer_frees_its_array(tmp_path):
    array = write_array(tmp_path, "imagenet_val", 6000)
    size = array.stat().st_size
    freed_at = []

    def consumer_finishes():
        time.sleep(0.5)
        freed_at.append(time.monotonic())
        array.unlink()

    threading.Thread(target=consumer_finishes).start()
    with reserve(tmp_path, 5000, size + 4000, "decode core", poll_s=0.05):
        reserved_at = time.monotonic()

    assert freed_at and reserved_at >= freed_at[0]
    (record,) = ledger(tmp_path)
    assert record["alive_before"] + record["bytes"] <= record["budget"]


def test_reservation_counts_as_alive_until_the_job_ends(tmp_path):
    with reserve(tmp_path, 3000, 10_000, "decode a") as reservation:
        assert alive_bytes(tmp_path) == 3000 and reservation.exists()
    assert alive_bytes(tmp_path) == 0


def test_reservation_of_a_dead_process_is_dropped(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    folder = tmp_path / BUDGET_DIR
    folder.mkdir()
    (folder / "stale.json").write_text(
        json.dumps({"bytes": 9000, "host": socket.gethostname(), "pid": int(dead.stdout)})
    )

    assert live_reservations(tmp_path) == {} and not (folder / "stale.json").exists()


def test_waiting_gives_up_with_an_actionable_error(tmp_path):
    write_array(tmp_path, "imagenet_val", 6000)
    with pytest.raises(DecodedBudgetError, match="cache_logits jobs"):
        with reserve(tmp_path, 5000, 8000, "decode core", poll_s=0.05, max_wait_s=0.2):
            pass
