"""What a run brings home: declared outputs, samples, summary metrics."""

from cubie_kernel.outputs.metrics import BUILTIN_METRICS, Metric, MetricResult
from cubie_kernel.outputs.output import Output
from cubie_kernel.outputs.output_functions import (
    OutputFunctions,
    OutputSettings,
    save_times,
    window_bounds,
)

__all__ = [
    "BUILTIN_METRICS", "Metric", "MetricResult", "Output", "OutputFunctions", "OutputSettings",
    "save_times", "window_bounds",
]
