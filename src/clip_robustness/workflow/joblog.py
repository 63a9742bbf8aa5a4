"""One logging idiom for every rule script: its logging, warnings and stderr go to the job's Snakemake log."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator


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
