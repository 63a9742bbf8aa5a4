"""Reading registry rows and writing transform parameters as JSON: the plain helpers every adapter shares."""

from __future__ import annotations

import enum
import math
from typing import Any, Mapping


def row_text(row: Mapping[str, Any], key: str) -> str:
    """A registry field as a stripped string; missing, None and NaN (an empty TSV cell) read as ``""``."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def plain_json(value: Any) -> Any:
    """A JSON-able form of a transform parameter (enums by value, tensors and tuples as lists)."""
    if isinstance(value, enum.Enum):
        return plain_json(value.value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # torch tensors, numpy arrays
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [plain_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def tuples(recipe: Mapping[str, Any]) -> dict:
    """A JSON recipe's lists back as tuples, as the libraries' transform builders take them."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.items()}
