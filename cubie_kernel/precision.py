"""The two supported floating-point precisions."""

from __future__ import annotations

import warnings

import numpy as np

PRECISIONS = {"float32": np.float32, "float64": np.float64}

#: Smallest ``rtol`` a precision follows: this many machine epsilons. Below it
#: the error estimate is round-off and the run's error no longer tracks rtol.
RTOL_EPSILONS = 8


class PrecisionWarning(UserWarning):
    """A setting asks for more accuracy than the run's precision can give."""


def warn_unresolvable_rtol(rtol, precision) -> None:
    """Warn (:class:`PrecisionWarning`) if any ``rtol`` is below what ``precision`` resolves."""
    eps = float(np.finfo(precision).eps)
    floor = RTOL_EPSILONS * eps
    smallest = min(rtol)
    if 0 < smallest < floor:
        name = np.dtype(precision).name
        warnings.warn(
            f"rtol={smallest:g} is below what {name} resolves ({RTOL_EPSILONS} x machine "
            f"epsilon {eps:.3g} = {floor:.2g}): the error estimate is round-off there and "
            f"errors will not follow the tolerance; use rtol >= {floor:.2g}"
            + (" or precision='float64'" if name == "float32" else ""),
            PrecisionWarning,
            stacklevel=3,
        )


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
