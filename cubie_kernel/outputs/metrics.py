"""Summary metrics: statistics of a variable over a window, updated sample by sample.

A metric never stores the trajectory. Each one is a small object
(:class:`Metric`): its accumulator size, three device functions written as
plain Python, and how its results are labelled. The loop calls them at every
sample time (every ``save_every``) of a window, for every summarised
variable, and the window's results go to the ``summaries`` output.

Device functions (``acc`` is the run's lane-form accumulator array:
accumulator element ``q`` of this metric at ``(base + q) * L + j``;
``option`` is the metric's integer option, e.g. K of ``peaks[K]``, 0 for
metrics without one)::

    init(acc, base, option, j, L)
    update(acc, base, option, j, L, value, derivative, t)
    finalise(acc, base, option, j, L, out, window, slot, run)

``value`` is the sample (the run's precision), ``derivative`` its time
derivative from the system's right-hand side (states only, and only for
metrics with ``uses_derivative``; 0 otherwise), ``t`` the sample time
(float64). ``finalise`` writes the metric's results for ``window`` to
``out[window, slot + r, run]`` for ``r`` in ``range(n_results)``, in the
order of :attr:`Metric.results`.

Units rules of a result: ``"same"`` (the variable's units), ``"time"``
(the system's time units), ``"1"`` (a count), ``"per_time"`` (variable
units per time unit). ``cell_methods`` follow the CF conventions
(``"time: maximum"``).

Windows and peaks
-----------------
A window is closed: it holds the samples at its start and end times (a
sample on the boundary of two windows belongs to both). Peaks are local
extrema of the sampled sequence within one window: sample ``i`` is a peak
when ``x[i-1] < x[i] >= x[i+1]`` (a negative peak when ``x[i-1] > x[i] <=
x[i+1]``); the first K are recorded, with their times, and missing ones are
NaN.

Adding a metric
---------------
Make a :class:`Metric` whose device functions are module-level functions
(numba compiles them for every target and caches them on disk) and pass it
in ``Output(summaries=...)`` next to the names of built-in ones.
"""

from __future__ import annotations

import math
import re
from typing import Callable

import attrs

#: Units rules a metric result may declare.
UNITS_RULES = ("same", "time", "1", "per_time")


@attrs.frozen
class MetricResult:
    """One labelled result of a metric.

    ``suffix`` names the result variable ``<variable>_<suffix>``; ``count``
    is its number of values per window: 1, or ``"option"`` for one per unit
    of the metric's option (with the extra dim ``dim``).
    """

    suffix: str
    long_name: str
    units: str = "same"
    cell_methods: str | None = None
    count: int | str = 1
    dim: str | None = None

    def __attrs_post_init__(self):
        if self.units not in UNITS_RULES:
            raise ValueError(f"units of result {self.suffix!r} must be one of {UNITS_RULES}, "
                             f"got {self.units!r}")
        if self.count == "option" and not self.dim:
            raise ValueError(f"result {self.suffix!r} has one value per option unit: give its dim")

    def size(self, option: int) -> int:
        return option if self.count == "option" else int(self.count)


@attrs.frozen
class Metric:
    """A summary metric (see the module docstring for the device functions).

    Parameters
    ----------
    name
        What users write in ``Output(summaries=...)``: ``"max"``, or
        ``"peaks[4]"`` for a metric with an option.
    results
        Its labelled results, in the order ``finalise`` writes them.
    accumulator, accumulator_per_option
        Accumulator elements per variable: ``accumulator +
        accumulator_per_option * option``.
    init, update, finalise
        The device functions.
    default_option
        None when the metric takes no option; else the option used when the
        name is written without one.
    uses_derivative
        The metric needs dx/dt from the right-hand side: it applies to
        states only.
    """

    name: str
    results: tuple
    accumulator: int
    init: Callable
    update: Callable
    finalise: Callable
    default_option: int | None = None
    uses_derivative: bool = False
    accumulator_per_option: int = 0

    def accumulator_size(self, option: int) -> int:
        return self.accumulator + self.accumulator_per_option * option

    def n_results(self, option: int) -> int:
        return sum(r.size(option) for r in self.results)


# --------------------------------------------------------------- device code
def sum_init(acc, base, option, j, L):
    acc[(base + 0) * L + j] = 0.0
    acc[(base + 1) * L + j] = 0.0


def mean_update(acc, base, option, j, L, value, derivative, t):
    acc[(base + 0) * L + j] += value
    acc[(base + 1) * L + j] += 1.0


def mean_finalise(acc, base, option, j, L, out, window, slot, run):
    out[window, slot, run] = acc[(base + 0) * L + j] / acc[(base + 1) * L + j]


def rms_update(acc, base, option, j, L, value, derivative, t):
    acc[(base + 0) * L + j] += value * value
    acc[(base + 1) * L + j] += 1.0


def rms_finalise(acc, base, option, j, L, out, window, slot, run):
    out[window, slot, run] = math.sqrt(acc[(base + 0) * L + j] / acc[(base + 1) * L + j])


# std: sums shifted by the window's first sample (no cancellation for a
# large mean); acc = shift, sum, sum of squares, count
def std_init(acc, base, option, j, L):
    for q in range(4):
        acc[(base + q) * L + j] = 0.0


def std_update(acc, base, option, j, L, value, derivative, t):
    if acc[(base + 3) * L + j] == 0.0:
        acc[(base + 0) * L + j] = value
    d = value - acc[(base + 0) * L + j]
    acc[(base + 1) * L + j] += d
    acc[(base + 2) * L + j] += d * d
    acc[(base + 3) * L + j] += 1.0


def std_finalise(acc, base, option, j, L, out, window, slot, run):
    n = acc[(base + 3) * L + j]
    s1 = acc[(base + 1) * L + j]
    variance = (acc[(base + 2) * L + j] - s1 * s1 / n) / n
    out[window, slot, run] = math.sqrt(max(variance, 0.0))


def max_init(acc, base, option, j, L):
    acc[base * L + j] = -math.inf


def max_update(acc, base, option, j, L, value, derivative, t):
    acc[base * L + j] = max(acc[base * L + j], value)


def min_init(acc, base, option, j, L):
    acc[base * L + j] = math.inf


def min_update(acc, base, option, j, L, value, derivative, t):
    acc[base * L + j] = min(acc[base * L + j], value)


def first_finalise(acc, base, option, j, L, out, window, slot, run):
    out[window, slot, run] = acc[base * L + j]


def magnitude_init(acc, base, option, j, L):
    acc[base * L + j] = 0.0


def magnitude_update(acc, base, option, j, L, value, derivative, t):
    acc[base * L + j] = max(acc[base * L + j], abs(value))


def dxdt_max_update(acc, base, option, j, L, value, derivative, t):
    acc[base * L + j] = max(acc[base * L + j], derivative)


def dxdt_min_update(acc, base, option, j, L, value, derivative, t):
    acc[base * L + j] = min(acc[base * L + j], derivative)


# time of the extreme: acc = extreme, its time (first occurrence)
def time_of_max_init(acc, base, option, j, L):
    acc[(base + 0) * L + j] = -math.inf
    acc[(base + 1) * L + j] = math.nan


def time_of_max_update(acc, base, option, j, L, value, derivative, t):
    if value > acc[(base + 0) * L + j]:
        acc[(base + 0) * L + j] = value
        acc[(base + 1) * L + j] = t


def time_of_min_init(acc, base, option, j, L):
    acc[(base + 0) * L + j] = math.inf
    acc[(base + 1) * L + j] = math.nan


def time_of_min_update(acc, base, option, j, L, value, derivative, t):
    if value < acc[(base + 0) * L + j]:
        acc[(base + 0) * L + j] = value
        acc[(base + 1) * L + j] = t


def second_finalise(acc, base, option, j, L, out, window, slot, run):
    out[window, slot, run] = acc[(base + 1) * L + j]


# peaks: acc = sign (+1 peaks, -1 negative peaks), x[i-2], x[i-1], t[i-1],
# samples seen, peaks found, K values, K times
def peaks_init(acc, base, option, j, L):
    acc[(base + 0) * L + j] = 1.0
    acc[(base + 4) * L + j] = 0.0
    acc[(base + 5) * L + j] = 0.0


def negative_peaks_init(acc, base, option, j, L):
    acc[(base + 0) * L + j] = -1.0
    acc[(base + 4) * L + j] = 0.0
    acc[(base + 5) * L + j] = 0.0


def peaks_update(acc, base, option, j, L, value, derivative, t):
    sign = acc[(base + 0) * L + j]
    seen = acc[(base + 4) * L + j]
    found = acc[(base + 5) * L + j]
    if seen >= 2.0 and found < option:
        middle = sign * acc[(base + 2) * L + j]
        if sign * acc[(base + 1) * L + j] < middle and middle >= sign * value:
            k = int(found)
            acc[(base + 6 + k) * L + j] = acc[(base + 2) * L + j]
            acc[(base + 6 + option + k) * L + j] = acc[(base + 3) * L + j]
            acc[(base + 5) * L + j] = found + 1.0
    acc[(base + 1) * L + j] = acc[(base + 2) * L + j]
    acc[(base + 2) * L + j] = value
    acc[(base + 3) * L + j] = t
    acc[(base + 4) * L + j] = seen + 1.0


def peaks_finalise(acc, base, option, j, L, out, window, slot, run):
    found = int(acc[(base + 5) * L + j])
    for k in range(option):
        if k < found:
            out[window, slot + k, run] = acc[(base + 6 + k) * L + j]
            out[window, slot + option + k, run] = acc[(base + 6 + option + k) * L + j]
        else:
            out[window, slot + k, run] = math.nan
            out[window, slot + option + k, run] = math.nan


# upward zero crossings: acc = previous sample, samples seen, crossings
def crossings_init(acc, base, option, j, L):
    acc[(base + 1) * L + j] = 0.0
    acc[(base + 2) * L + j] = 0.0


def crossings_update(acc, base, option, j, L, value, derivative, t):
    if acc[(base + 1) * L + j] > 0.0 and acc[(base + 0) * L + j] < 0.0 and value >= 0.0:
        acc[(base + 2) * L + j] += 1.0
    acc[(base + 0) * L + j] = value
    acc[(base + 1) * L + j] += 1.0


def crossings_finalise(acc, base, option, j, L, out, window, slot, run):
    out[window, slot, run] = acc[(base + 2) * L + j]


def _value(suffix, long_name, cell_methods, units="same"):
    return (MetricResult(suffix, long_name, units, cell_methods),)


def _peak_results(kind: str, dim: str) -> tuple:
    return (
        MetricResult(kind, f"first {kind.replace('_', ' ')} (local {'maxima' if kind == 'peaks' else 'minima'})",
                     "same", None, "option", dim),
        MetricResult(f"{kind[:-1]}_times", f"times of the {kind.replace('_', ' ')}", "time",
                     None, "option", dim),
    )


#: The built-in metrics, in the order results list them.
BUILTIN_METRICS: tuple[Metric, ...] = (
    Metric("mean", _value("mean", "mean", "time: mean"), 2, sum_init, mean_update,
           mean_finalise),
    Metric("std", _value("std", "standard deviation", "time: standard_deviation"), 4,
           std_init, std_update, std_finalise),
    Metric("rms", _value("rms", "root mean square", "time: root_mean_square"), 2,
           sum_init, rms_update, rms_finalise),
    Metric("max", _value("max", "maximum", "time: maximum"), 1, max_init, max_update,
           first_finalise),
    Metric("min", _value("min", "minimum", "time: minimum"), 1, min_init, min_update,
           first_finalise),
    Metric("max_magnitude", _value("max_magnitude", "maximum magnitude",
                                   "time: maximum_absolute_value"),
           1, magnitude_init, magnitude_update, first_finalise),
    Metric("time_of_max", _value("time_of_max", "time of the maximum", None, "time"),
           2, time_of_max_init, time_of_max_update, second_finalise),
    Metric("time_of_min", _value("time_of_min", "time of the minimum", None, "time"),
           2, time_of_min_init, time_of_min_update, second_finalise),
    Metric("peaks", _peak_results("peaks", "peak"), 6, peaks_init, peaks_update,
           peaks_finalise, default_option=4, accumulator_per_option=2),
    Metric("negative_peaks", _peak_results("negative_peaks", "negative_peak"), 6,
           negative_peaks_init, peaks_update, peaks_finalise, default_option=4,
           accumulator_per_option=2),
    Metric("crossings", _value("crossings", "upward zero crossings", None, "1"), 3,
           crossings_init, crossings_update, crossings_finalise),
    Metric("dxdt_max", _value("dxdt_max", "maximum of the time derivative", "time: maximum",
                              "per_time"),
           1, max_init, dxdt_max_update, first_finalise, uses_derivative=True),
    Metric("dxdt_min", _value("dxdt_min", "minimum of the time derivative", "time: minimum",
                              "per_time"),
           1, min_init, dxdt_min_update, first_finalise, uses_derivative=True),
)

_SPELLING = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$")


@attrs.frozen
class MetricRequest:
    """A metric with its option, as ``Output`` holds it."""

    metric: Metric
    option: int

    @property
    def label(self) -> str:
        m = self.metric
        return m.name if m.default_option is None else f"{m.name}[{self.option}]"


def resolve_metric(entry, metrics: tuple[Metric, ...] = BUILTIN_METRICS) -> MetricRequest:
    """A :class:`MetricRequest` from a name (``"max"``, ``"peaks[4]"``) or a Metric.

    Raises
    ------
    ValueError
        An unknown name (listing the allowed ones), an option on a metric
        that takes none, or an option < 1.
    """
    if isinstance(entry, MetricRequest):
        return entry
    if isinstance(entry, Metric):
        return MetricRequest(entry, entry.default_option or 0)
    if not isinstance(entry, str):
        raise ValueError(f"summaries entries must be metric names or Metric objects, got {entry!r}")
    match = _SPELLING.match(entry.strip())
    known = {m.name: m for m in metrics}
    if match is None or match.group(1) not in known:
        names = ", ".join(m.name if m.default_option is None else f"{m.name}[K]" for m in metrics)
        raise ValueError(f"summaries: unknown metric {entry!r}; allowed: {names}")
    metric = known[match.group(1)]
    if match.group(2) is None:
        return MetricRequest(metric, metric.default_option or 0)
    if metric.default_option is None:
        raise ValueError(f"summaries: metric {metric.name!r} takes no option, got {entry!r}")
    option = int(match.group(2))
    if option < 1:
        raise ValueError(f"summaries: {entry!r} needs an option >= 1")
    return MetricRequest(metric, option)
