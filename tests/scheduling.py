"""How ``make test`` shares the test files between its xdist workers (``--dist loadfile``).

The SLURM test files (``SLURM_FILES``) all drive the one-node test cluster, so they cannot run side by side: a
worker given one of them while another worker holds the node would only wait for it. They form one work unit, handed
out first, so one worker runs them back to back from the start while the other workers take every other file.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from xdist.scheduler import LoadFileScheduling

#: Test files that need the single-node SLURM cluster (tests/slurm/cluster.sh) to themselves.
SLURM_FILES = ("test_slurm_demo.py", "test_slurm_faults.py", "test_slurm_toy.py")
#: The work unit that holds every test of SLURM_FILES.
SLURM_SCOPE = "tests/test_slurm_*.py (the one-node cluster)"


class ClusterFirstFileScheduling(LoadFileScheduling):
    """``--dist loadfile`` with the SLURM files as one work unit, assigned before any other."""

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        return SLURM_SCOPE if PurePosixPath(scope).name in SLURM_FILES else scope

    def _assign_work_unit(self, node) -> None:
        if SLURM_SCOPE in self.workqueue:
            self.workqueue.move_to_end(SLURM_SCOPE, last=False)
        super()._assign_work_unit(node)
