"""cubie_kernel: batch ODE integration on one device: one thread per run on cuda, runs in
SIMD lockstep on the cpu, from one source of device functions."""

from cubie_kernel.batch_kernel import BatchSolverConfig, BatchSolverKernel
from cubie_kernel.buffers import BufferRegistry
from cubie_kernel.integrators.single_run import IntegratorSettings, SingleIntegratorRun
from cubie_kernel.outputs import Metric, MetricResult, Output
from cubie_kernel.precision import PrecisionWarning
from cubie_kernel.solver import Solver, solve_ivp
from cubie_kernel.status import RunFailedError, RunStatus, raise_on_failure
from cubie_kernel.systems import ODESystem
from cubie_kernel.systems.events import Event, EventDefinitionError

#: The process's default buffer registry (components built without an
#: explicit registry use it; each Solver makes its own).
buffer_registry = BufferRegistry()

__all__ = [
    "BatchSolverConfig",
    "BatchSolverKernel",
    "BufferRegistry",
    "Event",
    "EventDefinitionError",
    "IntegratorSettings",
    "Metric",
    "MetricResult",
    "ODESystem",
    "Output",
    "PrecisionWarning",
    "RunFailedError",
    "RunStatus",
    "SingleIntegratorRun",
    "Solver",
    "buffer_registry",
    "raise_on_failure",
    "solve_ivp",
]
