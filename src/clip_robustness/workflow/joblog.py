"""One log scheme for every rule: where a job's log and benchmark live, and how its script opens the log.

Every rule logs to ``results/logs/{rule}/{wildcards}.log`` (:func:`log_path`) and, where it has one, benchmarks to
``results/benchmarks/{rule}/{wildcards}.tsv`` (:func:`benchmark_path`); every rule script wraps its work in
:func:`job_log`, so its logging, warnings and stderr go to that log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

from clip_robustness.names import BENCHMARKS_DIR, LOGS_DIR


def _job_path(root: str, rule: str, wildcards: tuple[str, ...], suffix: str) -> str:
    if not wildcards:
        return f"{root}/{rule}{suffix}"
    return f"{root}/{rule}/" + "/".join(f"{{{name}}}" for name in wildcards) + suffix


def log_path(rule: str, *wildcards: str) -> str:
    """The log of a job of ``rule`` as a Snakemake pattern over the named ``wildcards``, in order:
    ``log_path("cache_logits", "model")`` is ``results/logs/cache_logits/{model}.log``; a rule without wildcards
    logs to ``results/logs/{rule}.log``."""
    return _job_path(LOGS_DIR, rule, wildcards, ".log")


def benchmark_path(rule: str, *wildcards: str) -> str:
    """The benchmark file of a job of ``rule``, named like its log (:func:`log_path`):
    ``results/benchmarks/{rule}/{wildcards}.tsv``."""
    return _job_path(BENCHMARKS_DIR, rule, wildcards, ".tsv")


@contextlib.contextmanager
def job_log(path: str | os.PathLike) -> Iterator[logging.Logger]:
    """Send a rule script's logging, warnings and stderr (the tqdm bar) to its Snakemake log file.

    An exception raised inside is logged with its traceback, then re-raised so the job fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        saved_stderr, sys.stderr = sys.stderr, stream
        try:
            yield logging.getLogger("clip_robustness.job")
        except BaseException:
            logging.getLogger("clip_robustness.job").exception("job failed")
            raise
        finally:
            sys.stderr = saved_stderr
            root.removeHandler(handler)
