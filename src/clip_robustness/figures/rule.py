"""What the figure and table rule scripts share: logging to the rule's log file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def log_to(path: str | Path) -> Iterator[logging.Logger]:
    """Send log records (INFO and above) to ``path`` for the duration of a rule script; an exception
    raised inside is written there with its traceback, then re-raised so the job fails."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for chatty in ("fontTools", "matplotlib", "PIL"):  # per-glyph subsetting chatter of PDF font embedding
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    try:
        yield logging.getLogger("clip_robustness.figures")
    except Exception:
        logging.getLogger("clip_robustness.figures").exception("rule failed")
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
