"""`make faults`: the fault matrix of both reliability rounds (issues 15 and 20) as one command.

Every fault is injected by the test that owns it (tests/test_fault_detection.py, tests/test_recovery.py,
tests/test_datasets_bad_input.py, tests/test_logits_cache.py, tests/test_cache_travels.py, tests/test_slurm.py): this
command runs those tests, so the injection code is theirs and nothing here copies it, and prints one line per fault:

    PASS  flipped archive bytes  | detected: yes | message: "checksum mismatch for archive imagenet-r.tar ..." |
          recovered by the same command: yes | wrong outputs left: none

A fault's test asserts each column it states, on real files and real runs: that the fault is detected (the run fails or
moves the file aside), the message (the text quoted is what the test matches), that the same command recovers
(``yes``: run again and compared with a clean run's outputs; ``n/a`` where the fault is a unit-level detection test,
whose recovery is the "rerun" line named), and that no output is left that a rerun could take for good. A fault whose
test fails prints ``FAIL`` with the test's own error, and the command exits 1.

Selections (``make faults FAULTS=...``): ``all`` (default), ``fast`` (the unit-level faults: seconds, no demo run; what
``tests/test_faults_command.py`` runs in CI), ``demo`` (injected into a finished demo run), ``slurm`` (the cluster's
faults: needs the single-node test cluster, ``bash tests/slurm/cluster.sh up``), or fault names separated by commas.
Every fault's test also runs in CI as part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Fault:
    name: str
    #: ``round1`` (issue 15) or ``round2`` (issue 20).
    round: str
    #: ``fast`` (unit level), ``demo`` (a finished demo run) or ``slurm`` (the test cluster).
    kind: str
    #: pytest node id (without parameters: every parameter must pass).
    test: str
    #: The message the test matches (quoted as the test asserts it).
    message: str
    #: True where the test runs the same command again and compares with a clean run; otherwise how it recovers.
    recovery: bool | str


R, D, B, C, T, S = ("tests/test_recovery.py", "tests/test_fault_detection.py", "tests/test_datasets_bad_input.py",
                    "tests/test_logits_cache.py", "tests/test_cache_travels.py", "tests/test_slurm.py")

FAULTS = (
    # -- round 1 (issue 15)
    Fault("deleted logits file", "round1", "demo", f"{R}::test_deleted_logits_file_is_recomputed_by_the_same_command",
          "(none: the missing file is planned again)", True),
    Fault("corrupt logits file", "round1", "fast", f"{D}::test_unreadable_logits_file_is_moved_aside",
          "not a readable logits cache (moved aside)", "moved aside, so the same command recomputes it"),
    Fault("foreign logits (cp -p)", "round1", "demo",
          f"{R}::test_foreign_logits_copied_with_old_timestamp_are_moved_aside_and_recomputed",
          "<file>: stale logits cache ... dataset: expected 'imagenet_r'", True),
    Fault("flipped archive bytes", "round1", "demo",
          f"{R}::test_archive_with_flipped_bytes_is_rejected_then_restored_by_the_same_command",
          "checksum mismatch for archive imagenet-r.tar ... run the same command again", True),
    Fault("truncated archive (tar, tar.gz)", "round1", "fast",
          f"{B}::test_truncated_archive_fails_extraction_and_leaves_no_folder_or_marker",
          "<archive>: truncated or corrupt", "no folder or marker left: the same command extracts again"),
    Fault("truncated archive matching its checksum", "round1", "fast",
          f"{D}::test_unreadable_archive_matching_its_checksum_is_moved_aside_so_it_is_downloaded_again",
          "truncated or corrupt ... run the same command again", "moved aside: the same command downloads again"),
    Fault("interrupted extraction", "round1", "fast",
          f"{B}::test_interrupted_extraction_is_never_taken_for_complete_and_is_redone",
          "(none: no marker, so never taken for complete)", "redone by the next extraction"),
    Fault("corrupt JPEG", "round1", "fast", f"{B}::test_corrupt_image_stops_the_manifest_naming_the_file_and_the_option",
          "<image path> ... skip_corrupt_images", "fix or skip (downloads.skip_corrupt_images), then the same command"),
    Fault("truncated JPEG", "round1", "fast", f"{D}::test_truncated_jpeg_is_named_by_the_manifest_step",
          "<image path>: truncated ... skip_corrupt_images", "fix or skip (downloads.skip_corrupt_images), then the same command"),
    Fault("kill -9 during a logits job", "round1", "demo",
          f"{R}::test_run_killed_during_a_logits_job_resumes_with_the_same_command",
          "(at the next run) removing Snakemake locks left by an interrupted run", True),
    Fault("job killed (SIGINT) before its rename", "round1", "fast",
          f"{C}::test_writer_failing_midway_leaves_neither_a_file_nor_a_temp_file",
          "(the interrupt itself)", "nothing written: the same command computes the file"),
    Fault("temp file left by SIGKILL", "round1", "fast",
          f"{C}::test_temp_file_left_by_a_killed_job_is_removed_by_the_next_write",
          "(none: never at the output path)", "removed by the next write"),
    Fault("full disk during a rewrite", "round1", "fast", f"{C}::test_failed_rewrite_keeps_the_previous_valid_file",
          "OSError: disk full", "the previous file kept: the same command rewrites it"),
    Fault("two runs at once", "round1", "demo",
          f"{R}::test_second_run_in_the_same_directory_is_refused_with_one_message_and_the_first_completes",
          "another Snakemake run is working in ... This run was refused and changed nothing", True),
    Fault("download: truncated body every time", "round1", "fast",
          f"{B}::test_truncated_http_body_every_time_fails_after_bounded_retries",
          "truncated: got N of M bytes (after 3 attempts) ... downloads.url_overrides", "nothing stored: the same command downloads"),
    Fault("download: HTTP 500", "round1", "fast", f"{B}::test_http_500_is_retried_a_bounded_number_of_times",
          "HTTP 500 <url> imagenet_r", "nothing stored: the same command downloads"),
    Fault("download: HTTP 404 on every URL", "round1", "fast", f"{B}::test_http_404_on_every_url_names_the_status_and_urls",
          "HTTP 404 <url>", "nothing stored: fix downloads.url_overrides, then the same command"),
    Fault("malicious tar (path traversal)", "round1", "fast",
          f"{D}::test_tar_with_path_traversal_is_refused_as_unsafe_not_as_truncated",
          "<archive>: unsafe member (not 'truncated')", "nothing extracted, no marker"),
    Fault("missing weights file", "round1", "demo",
          f"{R}::test_missing_weights_stop_the_run_before_any_job_naming_model_and_file",
          "missing weights file(s): model '<id>' expects <file> ... --keep-going", "stops before any job: nothing changed"),
    Fault("missing weights under --keep-going", "round1", "demo",
          f"{R}::test_with_keep_going_missing_weights_of_one_model_do_not_stop_the_others",
          "WeightsFetchError <file> (in that model's fetch log)", "the other models' branches complete"),
    # -- round 2 (issue 20)
    Fault("study moved with tar", "round2", "demo",
          f"{T}::test_study_moved_with_tar_plans_no_extraction_manifest_decode_or_logits_job",
          "(none: nothing to be done)", True),
    Fault("study copied with cp -r", "round2", "demo",
          f"{T}::test_study_copied_with_cp_r_plans_no_extraction_manifest_decode_or_logits_job",
          "(none: no extraction, manifest, decode or logits job)", True),
    Fault("changed data source without .snakemake/", "round2", "demo",
          f"{T}::test_changed_source_without_snakemake_metadata_recomputes_only_that_dataset",
          "data/manifests/imagenet_sketch.parquet: its source changed ... <new folder>", True),
    Fault("changed prompt set", "round2", "demo",
          f"{T}::test_changed_prompt_set_recomputes_only_the_zero_shot_models_head_and_logits",
          "zero_shot.prompt_set", True),
    Fault("edited registry row", "round2", "demo",
          f"{T}::test_edited_registry_row_recomputes_only_that_models_head_logits_and_metrics",
          "(none: only that model's weights record, head, logits and metrics are redone)", True),
    Fault("tampered shared cache", "round2", "demo",
          f"{T}::test_a_changed_member_of_a_shared_cache_is_refused_naming_it_and_nothing_is_written",
          "results/logits/<model>/<dataset>.parquet: sha256 ...", "nothing unpacked: ask for the cache again"),
    Fault("scancel of a running logits job", "round2", "slurm",
          f"{S}::test_scancel_of_a_running_logits_job_the_same_command_completes_like_a_clean_run",
          "SLURM-job '<id>' failed, SLURM status is: 'CANCELLED'", True),
    Fault("job over its runtime", "round2", "slurm", f"{S}::test_job_over_its_runtime_is_named_with_the_resource_to_raise",
          "clip_robustness: rule <rule>: SLURM job <id> ran over its time limit (TIMEOUT): raise its runtime ...",
          "raise the runtime, then the same command"),
    Fault("logits job killed on the node", "round2", "slurm",
          f"{S}::test_logits_job_killed_on_the_node_is_resubmitted_and_the_run_completes_like_a_clean_run",
          "SLURM-job '<id>' failed, SLURM status is: 'FAILED'", True),
    Fault("logits job requeued by the scheduler", "round2", "slurm",
          f"{S}::test_logits_job_requeued_by_the_scheduler_runs_again_under_its_id_and_the_run_completes",
          "(none: SLURM runs it again under its id)", True),
)


def select(selection: str) -> list[Fault]:
    """The faults of ``selection``: ``all``, a kind (``fast``, ``demo``, ``slurm``), a round (``round1``,
    ``round2``) or fault names separated by commas."""
    if selection == "all":
        return list(FAULTS)
    chosen = [f for f in FAULTS if selection in (f.kind, f.round)]
    if chosen:
        return chosen
    names = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = [name for name in names if name not in {f.name for f in FAULTS}]
    if unknown:
        raise SystemExit(f"faults: unknown fault(s) {unknown}; choose all, fast, demo, slurm, round1, round2 or names "
                         f"from: {', '.join(f.name for f in FAULTS)}")
    return [f for f in FAULTS if f.name in names]


def run_tests(faults: list[Fault], pytest_args: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Run the faults' tests in one pytest process; node id (parameters stripped) -> [(outcome, detail)]."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.xml"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
        if any(f.kind == "slurm" for f in faults):
            env["CLIP_ROBUSTNESS_REQUIRE_SLURM"] = "1"  # a missing cluster fails these faults, never skips them
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                        f"--junitxml={report}", *pytest_args, *[f.test for f in faults]], cwd=ROOT, env=env,
                       stdout=sys.stderr)
        if not report.is_file():
            raise SystemExit("faults: pytest wrote no report (see its output above)")
        results: dict[str, list[tuple[str, str]]] = {}
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            module = case.get("classname", "").replace(".", "/")
            node = f"{module}.py::{case.get('name', '').split('[')[0]}"
            problem = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
            outcome = "passed" if problem is None else problem.tag
            message = "" if problem is None else (problem.get("message") or "").strip()
            detail = message.splitlines()[0][:200] if message else ""
            results.setdefault(node, []).append((outcome, detail))
        return results


def line(fault: Fault, outcomes: list[tuple[str, str]]) -> tuple[bool, str]:
    passed = bool(outcomes) and all(outcome == "passed" for outcome, _ in outcomes)
    if not passed:
        why = next((f"{o}: {d}" for o, d in outcomes if o != "passed"), "not run")
        return False, f"FAIL  {fault.name:<42} | {fault.round} | test {fault.test} -> {why}"
    recovered = "yes" if fault.recovery is True else f"n/a ({fault.recovery})"
    return True, (f"PASS  {fault.name:<42} | {fault.round} | detected: yes | message: \"{fault.message}\" | "
                  f"recovered by the same command: {recovered} | wrong outputs left: none")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("selection", nargs="?", default="all",
                        help="all (default), fast, demo, slurm, round1, round2, or fault names separated by commas")
    parser.add_argument("--list", action="store_true", help="list the faults and their tests, run nothing")
    args, pytest_args = parser.parse_known_args(argv)  # any other option is passed to pytest
    faults = select(args.selection)
    if args.list:
        for fault in faults:
            print(f"{fault.name:<42} {fault.round} {fault.kind:<5} {fault.test}")
        return 0
    results = run_tests(faults, pytest_args)
    lines = [line(fault, results.get(fault.test, [])) for fault in faults]
    print(f"faults: {sum(ok for ok, _ in lines)} of {len(lines)} handled ({args.selection})")
    for _, text in lines:
        print(text)
    return 0 if all(ok for ok, _ in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
