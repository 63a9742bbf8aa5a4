"""Metrics of the study (docs/methods.md, "Metric definitions"): pure functions over arrays, plus the tidy-table builders.

- :mod:`~clip_robustness.metrics.accuracy`: top-1 within a dataset's label space;
- :mod:`~clip_robustness.metrics.calibration`: ECE, NLL, temperature fit, the calibration split;
- :mod:`~clip_robustness.metrics.ood`: OOD scores (MSP, MCM, max-logit), AUROC, FPR@95;
- :mod:`~clip_robustness.metrics.imagenet_x`: factor accuracy, error ratio, effective robustness;
- :mod:`~clip_robustness.metrics.correlation`: accuracy vs AUROC correlations per (group, source family[, route]);
- :mod:`~clip_robustness.metrics.findings`: the paper's claims tested on the aggregate table (findings.csv);
- :mod:`~clip_robustness.metrics.resampling`: vectorised cluster bootstrap, permutations and weighted fits of the findings;
- :mod:`~clip_robustness.metrics.simulate`: simulated studies with planted effects that validate the findings' verdicts;
- the tidy per-model and aggregate tables the rules write: :mod:`~clip_robustness.metrics.tidy` (the table, its
  files and the settings it is computed with), :mod:`~clip_robustness.metrics.model_rows` (one model's rows, from its
  logits files joined to their manifests) and :mod:`~clip_robustness.metrics.aggregate` (the aggregate over models).
"""

from clip_robustness.metrics.accuracy import top1_accuracy, top1_correct
from clip_robustness.metrics.calibration import (
    Predictions,
    calibration_split,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    predict,
)
from clip_robustness.metrics.correlation import accuracy_auroc_correlations, correlate
from clip_robustness.metrics.imagenet_x import (
    IMAGENET_X_FACTORS,
    effective_robustness,
    error_ratios,
    factor_accuracies,
    load_imagenet_x_annotations,
)
from clip_robustness.metrics.ood import (
    OOD_SCORES,
    auroc,
    fpr_at_tpr,
    max_logit,
    max_softmax_probability,
    mcm_score,
    ood_scores,
)

__all__ = [
    "IMAGENET_X_FACTORS",
    "OOD_SCORES",
    "Predictions",
    "accuracy_auroc_correlations",
    "auroc",
    "calibration_split",
    "correlate",
    "effective_robustness",
    "error_ratios",
    "expected_calibration_error",
    "factor_accuracies",
    "fit_temperature",
    "fpr_at_tpr",
    "load_imagenet_x_annotations",
    "max_logit",
    "max_softmax_probability",
    "mcm_score",
    "negative_log_likelihood",
    "ood_scores",
    "predict",
    "top1_accuracy",
    "top1_correct",
]
