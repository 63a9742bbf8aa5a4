"""Logits stage (workflow/rules/logits.smk): each model's 1000 ImageNet logits on each dataset, cached as parquet.

- :mod:`~clip_robustness.logits.images`: opening manifest images (shared by both input paths);
- :mod:`~clip_robustness.logits.decoded`: the fast path, one uint8 array per (dataset, preprocessing geometry);
- :mod:`~clip_robustness.logits.loop`: running a model over a manifest (precision, batching, OOM back-off);
- :mod:`~clip_robustness.logits.cache`: the parquet file contract of the cache (docs/architecture.md, "Logits cache").

Imports flow one way: images <- decoded <- loop; cache depends on none of them.
"""
