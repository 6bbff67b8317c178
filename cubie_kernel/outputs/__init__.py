"""What a run writes: saved states and observables (summaries come later)."""

from cubie_kernel.outputs.output_functions import OutputFlags, OutputFunctions, OutputSettings, save_times

__all__ = ["OutputFlags", "OutputFunctions", "OutputSettings", "save_times"]
