"""The two supported floating-point precisions."""

from __future__ import annotations

import numpy as np

PRECISIONS = {"float32": np.float32, "float64": np.float64}


def check_precision(precision) -> type:
    """Normalise a numpy float type, dtype or name to ``np.float32``/``np.float64``."""
    try:
        name = None if precision is None else np.dtype(precision).name
    except TypeError:
        name = None
    if isinstance(precision, bool) or name not in PRECISIONS:
        raise ValueError(
            f"precision must be float32 or float64 (a numpy type or its name), got {precision!r}"
        )
    return PRECISIONS[name]
