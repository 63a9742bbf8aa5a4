"""Glue shared by every stage of the workflow: what a config asks for (:mod:`~clip_robustness.workflow.study`),
one logging idiom for rule scripts (:mod:`~clip_robustness.workflow.joblog`) and atomic writes
(:mod:`~clip_robustness.workflow.io`). Imports nothing heavy (no torch), so the Snakefile can use it.
"""
