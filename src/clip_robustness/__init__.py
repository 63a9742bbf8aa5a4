"""Reproducibility pipeline for 'A Closer Look at the Robustness of CLIP' (Tu, Deng, Gedeon, NeurIPS 2023).

The package holds all the logic; the Snakemake rules under ``workflow/`` are thin wrappers that call it.
Sub-packages, in DAG order:

- :mod:`clip_robustness.datasets` -- dataset registry, downloads, archives, manifests, label spaces;
- :mod:`clip_robustness.models` -- model registry, model/transform construction, zero-shot heads;
- :mod:`clip_robustness.logits_cache` -- the parquet contract of the logits cache (SPEC section 3);
- :mod:`clip_robustness.inference` -- running a model over a manifest (batching, OOM back-off);
- :mod:`clip_robustness.metrics` -- pure metric functions over arrays (SPEC section 4);
- :mod:`clip_robustness.figures` -- figures and tables from tidy metric tables (SPEC section 5).
"""

__version__ = "0.1.0"
PIPELINE_VERSION = __version__
