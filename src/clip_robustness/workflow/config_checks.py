"""Config checks JSON Schema cannot express (orderings between values), run right after schema validation
so a bad value stops the run before any job, naming the key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clip_robustness.workflow.study import ConfigError


def check_config_values(config: Mapping[str, Any]) -> None:
    """Raise :class:`~clip_robustness.workflow.study.ConfigError` naming the key of the first inconsistent value."""
    low, high = config["metrics"]["temperature_range"]
    if not low < high:
        raise ConfigError(
            f"metrics.temperature_range is [{low}, {high}]: the first value (lowest temperature searched) must be "
            "smaller than the second (highest), e.g. [0.01, 10.0]"
        )
