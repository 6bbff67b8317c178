"""The frame every step engine shares: registry, rebuilds, build, dense output.

A step engine (:class:`~cubie_kernel.algorithms.erk_step.ERKStep`,
:class:`~cubie_kernel.algorithms.rosenbrock_step.RosenbrockStep`,
:class:`~cubie_kernel.algorithms.dirk_step.DIRKStep`) generates its step
attempt as Python source from a tableau. What differs per engine is that
source, the buffers it registers and the names the source expects; the rest
is :class:`StepFactory`:

- the buffer registry the step registers its buffers in at construction, and
  again when the tableau, the system or dense output changes;
- the build: the generated source is imported through the kernel cache
  (:func:`cubie_kernel.kernel_cache.import_source`, the module named after
  the source and what its namespace is made of) and its step function
  compiled for the target, and with dense output ``interpolate`` (inline)
  and ``end_derivative`` too;
- :attr:`~StepFactory.interpolate_function` and
  :attr:`~StepFactory.end_derivative_function`, which the loop reads.
"""

from __future__ import annotations

import numpy as np

from cubie_kernel import kernel_cache, targets
from cubie_kernel.factory import CompiledFactory


class StepFactory(CompiledFactory):
    """Base class of the step engines: the frame around a generated step.

    A subclass sets :attr:`kind` and :attr:`step_name` and implements
    :meth:`register_buffers`, :meth:`source` and :meth:`source_namespace`.
    Its settings have the fields ``tableau``, ``system``, ``precision``,
    ``target`` and ``dense``, and it registers a ``dense_stages`` buffer
    (size 0 without dense output).

    The namespace of the generated source always holds ``PREC`` (the run's
    precision type), ``WIDE`` (``np.float64``), ``dxdt_values`` (the system's,
    inline) and ``alloc_dense`` (the ``dense_stages`` allocator); an engine
    adds its own names with :meth:`source_namespace`.
    """

    #: Kind of the generated module in the kernel cache (part of its name).
    kind: str = ""
    #: Name of the step function the generated source defines.
    step_name: str = ""
    #: The generated source defines ``dense_stages_lane`` (and the interpolant)
    #: even without dense output: events recompute a crossing step's stages
    #: instead of every step storing them.
    recomputes_dense: bool = False

    def __init__(self, settings, registry) -> None:
        super().__init__(settings)
        self._registry = registry
        self.register_buffers()

    @property
    def registry(self):
        return self._registry

    def register_buffers(self) -> None:  # pragma: no cover - abstract
        """Register the step's buffers (sizes from the settings) in :attr:`registry`."""
        raise NotImplementedError

    def settings_changed(self, changed: set[str]) -> None:
        if changed & {"tableau", "system", "dense"}:
            self.register_buffers()

    @property
    def tableau(self):
        """The tableau the step runs."""
        return self.compile_settings.tableau

    def allocator(self, name: str, precision):
        """The registry's allocator of this step's buffer ``name``."""
        return self._registry.get_allocator(name, self, self.compile_settings.target, precision)

    def source(self) -> str:  # pragma: no cover - abstract
        """The generated source of the step (for reading)."""
        raise NotImplementedError

    def source_namespace(self, backend, precision) -> dict:  # pragma: no cover - abstract
        """The names the generated source expects beyond the ones every step gets."""
        raise NotImplementedError

    def layout_key(self, layout: dict) -> tuple:
        """What of the registry's layout the cached module's name covers."""
        return tuple(layout[name] for name in sorted(layout))

    def build(self):
        s = self.compile_settings
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        jit = backend.device_jit
        layout = self._registry.layout(self, s.target)
        namespace = {
            "PREC": precision,
            "WIDE": np.float64,
            "dxdt_values": jit(s.system.lane_functions(precision)["dxdt_values"], inline=True),
            "alloc_dense": self.allocator("dense_stages", precision),
            **self.source_namespace(backend, precision),
        }
        # the module's name covers the source and what the namespace is made of
        identity = kernel_cache.describe((s, self.layout_key(layout)))
        module = kernel_cache.import_source(self.kind, self.source(), namespace, identity)
        if hasattr(module, "interpolate"):
            self._interpolate = jit(module.interpolate, inline=True)
            self._end_derivative = jit(module.end_derivative)
        else:
            self._interpolate = self._end_derivative = None
        lane = getattr(module, "dense_stages_lane", None)
        self._dense_stages_lane = None if lane is None else jit(lane)
        return jit(getattr(module, self.step_name))

    @property
    def interpolate_function(self):
        """``interpolate(dense, h, theta, out, j)`` of the built step (dense output only):
        writes ``y(t_n + theta h)`` of lane ``j`` to the lane-form ``out``."""
        self.device_function
        return self._interpolate

    @property
    def end_derivative_function(self):
        """``end_derivative(state, parameters, t, dense, j)`` of the built step (dense
        output only): completes an accepted step's interpolant before it is read, where
        it needs ``f(t_n+1, y_n+1)`` beyond the stages (a no-op where it does not)."""
        self.device_function
        return self._end_derivative

    @property
    def dense_stages_lane_function(self):
        """``dense_stages_lane(state, parameters, t, h, dense, j)`` (engines that
        :attr:`recomputes_dense`, else None): the step of size ``h`` from ``(t,
        state)`` again, for lane ``j`` alone, its interpolant's data into ``dense``
        as a dense step would have stored it."""
        self.device_function
        return self._dense_stages_lane
