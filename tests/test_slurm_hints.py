"""The hint after a job SLURM stopped at a limit (clip_robustness.workflow.slurm_hints): it names the rule (or the group
job and its rules) and the resource to raise, and says nothing for other errors. The same handler runs for real on the
test cluster in tests/test_slurm_toy.py (a job over its runtime)."""

from __future__ import annotations

import io
from pathlib import Path

from clip_robustness.workflow.slurm_hints import limit_hits, print_limit_hints

ROOT = Path(__file__).resolve().parents[1]

#: Shaped as Snakemake 9 with the SLURM executor plugin writes a failed job into the run's log.
LOG = """\
[Sun Dec  6 02:40:01 2026]
Error in rule over_runtime:
    message: SLURM-job '41' failed, SLURM status is: 'TIMEOUT'. Detailed failure reason unavailable (status command is not 'sacct').
    jobid: 0
    output: faults/over_runtime.txt
    log: logs/over_runtime.log, .snakemake/slurm_logs/rule_over_runtime/41.log (check log file(s) for error details)

Error in rule cache_logits:
    message: SLURM-job '42' failed, SLURM status is: 'OUT_OF_MEMORY'. Detailed failure reason unavailable (status command is not 'sacct').
    jobid: 5
    output: logits/m2/d1.txt

[Sun Dec  6 02:41:52 2026]
    message: Error in group cache_m2
    log: .snakemake/slurm_logs/group_cache_m2_cache_logits/31.log (check log file(s) for error details)
    jobs:
        rule cache_logits:
            jobid: 12
            output: logits/m2/d3.txt

Error in rule always_fails:
    message: SLURM-job '43' failed, SLURM status is: 'FAILED'. Detailed failure reason unavailable (status command is not 'sacct').
    jobid: 7
"""


def test_a_job_over_its_runtime_and_one_out_of_memory_are_named_with_the_resource_to_raise():
    hits = limit_hits(LOG)
    assert [(h.kind, h.name, h.rules, h.job_id, h.state) for h in hits] == [
        ("rule", "over_runtime", ("over_runtime",), "41", "TIMEOUT"),
        ("rule", "cache_logits", ("cache_logits",), "42", "OUT_OF_MEMORY"),
    ]
    assert (
        hits[0]
        .hint()
        .startswith(
            "clip_robustness: rule over_runtime: SLURM job 41 ran over its time limit (TIMEOUT): raise its runtime "
            "(minutes), in the rule's `resources: runtime` or the profile's `set-resources: over_runtime: runtime:`"
        )
    )
    assert (
        hits[1]
        .hint()
        .startswith(
            "clip_robustness: rule cache_logits: SLURM job 42 ran out of memory (OUT_OF_MEMORY): raise its mem_mb (MB), in "
            "the rule's `resources: mem_mb` or the profile's `set-resources: cache_logits: mem_mb:`"
        )
    )


def test_hints_are_printed_from_the_log_file_and_nothing_for_other_errors_or_no_log(tmp_path):
    log = tmp_path / "run.snakemake.log"
    log.write_text(LOG)
    out = io.StringIO()
    assert len(print_limit_hints(log, out)) == 2 and out.getvalue().count("clip_robustness: ") == 2
    assert len(print_limit_hints([str(log)], io.StringIO())) == 2  # onerror's `log`: Snakemake 9 hands a list of files
    log.write_text(LOG.replace("TIMEOUT", "FAILED").replace("OUT_OF_MEMORY", "CANCELLED"))
    assert print_limit_hints(log, io.StringIO()) == []
    assert print_limit_hints(tmp_path / "missing.log", io.StringIO()) == [] and print_limit_hints(None) == []


def test_the_workflow_prints_the_hints_when_a_run_fails():
    common = (ROOT / "workflow/rules/common.smk").read_text()
    handler = common.split("\nonerror:\n", 1)[1].split("\n\n\n", 1)[0]
    assert "from clip_robustness.workflow.slurm_hints import print_limit_hints" in handler
    assert "print_limit_hints(log)" in handler
