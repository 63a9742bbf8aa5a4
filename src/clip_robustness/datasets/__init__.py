"""Datasets stage: registry, verified downloads, extraction, manifests and label spaces.

- :mod:`~clip_robustness.datasets.registry` -- ``config/datasets.yaml``: archives (URL, checksums) and datasets;
- :mod:`~clip_robustness.datasets.download` -- fetching with retries and resume; sha256/md5 verification and pinning;
- :mod:`~clip_robustness.datasets.extract` -- extraction with a completion marker written last;
- :mod:`~clip_robustness.datasets.manifest` -- one row per image with its ImageNet-1k label (or -1);
- :mod:`~clip_robustness.datasets.label_spaces` -- ImageNet-A/R subsets (timm) and ObjectNet's mapping;
- :mod:`~clip_robustness.demo.archives` -- miniature archives in each real layout (tests, demo);
- :mod:`~clip_robustness.datasets.workflow` -- what the Snakemake rules ask of the above;
- :mod:`~clip_robustness.datasets.errors` -- the errors, all :class:`DatasetError`.
"""
