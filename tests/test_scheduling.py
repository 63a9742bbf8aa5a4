"""The test scheduler of ``make test``: the SLURM files are one work unit, handed out before any other."""

from __future__ import annotations

import re
from pathlib import Path

from scheduling import SLURM_FILES, SLURM_SCOPE, ClusterFirstFileScheduling

COLLECTION = [
    "tests/test_a.py::test_one",
    "tests/test_a.py::test_two",
    "tests/test_slurm_demo.py::test_demo",
    "tests/test_slurm_faults.py::test_requeue",
    "tests/test_slurm_hints.py::test_hint",
    "tests/test_slurm_toy.py::test_cancel",
    "tests/test_z.py::test_last",
]


class Worker:
    """Stands in for an xdist worker: records the collection indices it is asked to run."""

    def __init__(self) -> None:
        self.sent: list[list[int]] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.append(indices)


def test_the_cluster_files_are_one_unit_and_go_to_the_first_worker_whatever_the_queue_order(pytestconfig, monkeypatch):
    monkeypatch.setattr(pytestconfig.option, "tx", ["2*popen"])  # two workers, as `make test -n 2` starts
    scheduler = ClusterFirstFileScheduling(pytestconfig)
    scopes = {scheduler._split_scope(nodeid) for nodeid in COLLECTION}
    assert scopes == {"tests/test_a.py", SLURM_SCOPE, "tests/test_slurm_hints.py", "tests/test_z.py"}

    first, second = Worker(), Worker()
    for worker in (first, second):
        scheduler.registered_collections[worker] = COLLECTION
    for nodeid in COLLECTION:  # the queue as xdist builds it: by scope, in collection order
        scheduler.workqueue.setdefault(scheduler._split_scope(nodeid), {})[nodeid] = False
    scheduler._assign_work_unit(first)
    scheduler._assign_work_unit(second)
    assert first.sent == [[2, 3, 5]]  # test_slurm_demo, _faults, _toy, back to back on one worker
    assert second.sent == [[0, 1]]
    assert SLURM_SCOPE not in scheduler.workqueue


def test_every_test_file_marked_slurm_is_in_the_cluster_unit():
    """A new SLURM test file must join SLURM_FILES, or it would run beside the others and find the node taken."""
    tests = Path(__file__).parent
    marker = re.compile(r"^pytestmark = pytest\.mark\.slurm$", re.M)
    marked = {p.name for p in tests.glob("test_*.py") if marker.search(p.read_text())}
    assert marked == set(SLURM_FILES)
