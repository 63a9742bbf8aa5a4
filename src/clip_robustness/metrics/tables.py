"""The metric stage's tables, one import for the rules' scripts: the tidy table and its files
(:mod:`~clip_robustness.metrics.tidy`), the settings (:mod:`~clip_robustness.metrics.settings`), the inputs
(:mod:`~clip_robustness.metrics.inputs`), one model's rows (:mod:`~clip_robustness.metrics.model_rows`) and the
aggregate over models (:mod:`~clip_robustness.metrics.aggregate`). Everything here is re-exported from them.
"""

from clip_robustness.metrics.aggregate import (
    IMAGENET_C_METRICS,
    AggregateResult,
    aggregate_from_files,
    aggregate_metrics,
    effective_robustness_rows,
    imagenet_c_mean_rows,
)
from clip_robustness.metrics.inputs import DatasetLogits, load_dataset_logits
from clip_robustness.metrics.model_rows import (
    calibration_rows,
    imagenet_x_rows,
    model_metrics_from_files,
    model_metrics_table,
    ood_rows,
)
from clip_robustness.metrics.settings import FPR_TPR, MetricSettings, library_versions, settings_record
from clip_robustness.metrics.tidy import (
    IMAGENET_X_DATASET,
    METADATA_KEY,
    METRIC_COLUMNS,
    MetricsInputError,
    read_metrics_table,
    tidy_frame,
    tidy_row,
    write_metrics_table,
)

__all__ = [
    "FPR_TPR", "IMAGENET_C_METRICS", "IMAGENET_X_DATASET", "METADATA_KEY", "METRIC_COLUMNS", "AggregateResult",
    "DatasetLogits", "MetricSettings", "MetricsInputError", "aggregate_from_files", "aggregate_metrics",
    "calibration_rows", "effective_robustness_rows", "imagenet_c_mean_rows", "imagenet_x_rows", "library_versions",
    "load_dataset_logits", "model_metrics_from_files", "model_metrics_table", "ood_rows", "read_metrics_table",
    "settings_record", "tidy_frame", "tidy_row", "write_metrics_table",
]
