"""Reproducibility pipeline for 'A Closer Look at the Robustness of CLIP' (Tu, Deng, Gedeon, NeurIPS 2023).

The package holds all the logic; the Snakemake rules under ``workflow/`` are thin wrappers that call it.
Sub-packages, in DAG order:

- :mod:`clip_robustness.datasets` -- dataset registry, downloads, archives, manifests, label spaces;
- :mod:`clip_robustness.models` -- model registry, model/transform construction, zero-shot heads;
- :mod:`clip_robustness.logits` -- running models over manifests and the parquet logits cache (docs/architecture.md, "Logits cache");
- :mod:`clip_robustness.metrics` -- pure metric functions over arrays (docs/methods.md, "Metric definitions");
- :mod:`clip_robustness.figures` -- figures and tables from tidy metric tables (docs/methods.md, "Figures");
- :mod:`clip_robustness.qc` -- our numbers against published ones.

Beside them: :mod:`clip_robustness.names` (the study's shared names: groups, dataset ids, output paths),
:mod:`clip_robustness.workflow` (glue shared by the stages: the study, job logs, atomic writes)
and :mod:`clip_robustness.demo` (the embedded demo and test fixtures, not production code).
"""

__version__ = "0.1.0"
PIPELINE_VERSION = __version__
