"""The embedded demo and the test fixtures, kept apart from the production stages.

- :mod:`~clip_robustness.demo.archives`: miniature archives in each real on-disk layout;
- :mod:`~clip_robustness.demo.metrics`: synthetic tidy metric tables (figure tests and benchmarks);
- :mod:`~clip_robustness.demo.generate`: ``python -m clip_robustness.demo OUT`` writes the demo's upstream
  (archives, dataset registry, tiny trained models).
"""
