"""What to raise when SLURM stopped a job at one of its limits (issue 20, goal 5).

Snakemake's SLURM executor reports a job that SLURM killed at its time limit as ``SLURM-job '<id>' failed, SLURM
status is: 'TIMEOUT'`` under ``Error in rule <name>:`` (or ``Error in group <name>:``): it names the rule, not the
resource. The workflow's ``onerror`` handler (``workflow/rules/common.smk``) calls :func:`print_limit_hints` with the
run's log, which prints one line per such job naming the rule and the resource to raise, where::

    clip_robustness: rule cache_logits: SLURM job 123 ran over its time limit (TIMEOUT): raise its runtime
    (minutes), in the rule's `resources: runtime` or the profile's `set-resources: cache_logits: runtime:` ...

A job killed for memory (``OUT_OF_MEMORY``) gets the same line for ``mem_mb``. Nothing is printed for other errors.
The state must be in the log: the plugin writes it for a rule's job; for a group job it may write only
``Error in group <name>`` (then no line is printed, and docs/cluster.md says how to look the state up).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

#: SLURM job states that mean "the job hit a limit you can raise", with the Snakemake resource to raise and its unit.
LIMITS = {
    "TIMEOUT": ("runtime", "minutes", "ran over its time limit"),
    "OUT_OF_MEMORY": ("mem_mb", "MB", "ran out of memory"),
}

_BLOCK = re.compile(r"^Error in (rule|group) (\S+?):\s*$", re.M)
_FAILED = re.compile(r"SLURM-job '(\d+)' failed,? (?:due to a node failure, )?SLURM status is: '([A-Z_]+)'")
_RULE = re.compile(r"\brule (\w+)\b")


@dataclass(frozen=True)
class LimitHit:
    """One job SLURM stopped at a limit: the ``kind`` (``rule`` or ``group``) and ``name`` Snakemake gave it, the rules
    it ran, the SLURM job id and state."""

    kind: str
    name: str
    rules: tuple[str, ...]
    job_id: str
    state: str

    def hint(self) -> str:
        resource, unit, what = LIMITS[self.state]
        rules = ", ".join(self.rules)
        where = f"rule {self.name}" if self.kind == "rule" else f"group job {self.name} (rules {rules})"
        profile = " / ".join(f"`set-resources: {rule}: {resource}:`" for rule in self.rules)
        extra = (
            " A group job asks SLURM for the sum of its members' runtimes, so raise the member that runs longest."
            if self.kind == "group" and resource == "runtime"
            else ""
        )
        return (
            f"clip_robustness: {where}: SLURM job {self.job_id} {what} ({self.state}): raise its {resource} "
            f"({unit}), in the rule's `resources: {resource}` or the profile's {profile} (profiles/slurm/config.yaml, "
            f"or `--set-resources {self.rules[0]}:{resource}=...` on the command line); `make plan` predicts "
            f"what the study's jobs need. Then run the same command again: finished outputs are kept.{extra}"
        )


def limit_hits(log_text: str) -> list[LimitHit]:
    """Every job of a Snakemake log that SLURM stopped at a limit (:data:`LIMITS`), in the order reported."""
    hits = []
    starts = list(_BLOCK.finditer(log_text))
    for index, start in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(log_text)
        block = log_text[start.end() : end]
        failed = _FAILED.search(block)
        if failed is None or failed.group(2) not in LIMITS:
            continue
        kind, name = start.groups()
        rules = (name,) if kind == "rule" else tuple(dict.fromkeys(_RULE.findall(block))) or (name,)
        hits.append(LimitHit(kind, name, rules, failed.group(1), failed.group(2)))
    return hits


def _log_files(log: object) -> list[Path]:
    """The log file(s) Snakemake hands to ``onerror`` (a path, or a list of paths with several log handlers)."""
    if not log:
        return []
    if isinstance(log, (str, os.PathLike)):
        return [Path(log)]
    try:
        return [Path(str(item)) for item in log]  # type: ignore[union-attr]
    except TypeError:
        return [Path(str(log))]


def print_limit_hints(log: object, stream: TextIO = sys.stderr) -> list[str]:
    """Print (and return) one hint per job of the Snakemake log file(s) ``log`` that SLURM stopped at a limit; the
    workflow's ``onerror`` handler. A missing or unreadable log prints nothing."""
    text = ""
    for path in _log_files(log):
        try:
            text += path.read_text(errors="replace")
        except OSError:
            continue
    hints = list(dict.fromkeys(hit.hint() for hit in limit_hits(text)))
    for hint in hints:
        print(hint, file=stream)
    return hints


if __name__ == "__main__":
    sys.exit(0 if print_limit_hints(sys.argv[1] if len(sys.argv) > 1 else None, sys.stdout) is not None else 1)
