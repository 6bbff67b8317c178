"""The user-facing API: ``Solver`` and the one-call ``solve_ivp``."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import xarray as xr

from cubie_kernel import targets
from cubie_kernel.algorithms.tableaus import get_tableau
from cubie_kernel.batch_kernel import BatchSolverKernel
from cubie_kernel.buffers import BufferRegistry
from cubie_kernel.inputs import build_batch, check_finite_number
from cubie_kernel.integrators.single_run import IntegratorSettings, SingleIntegratorRun
from cubie_kernel.precision import check_precision
from cubie_kernel.systems import ODESystem

#: Keyword settings Solver accepts besides its named arguments.
EXTRA_SETTINGS = ("save_states", "save_observables", "threads_per_block")


class Solver:
    """Integrate one ODE system over batches of runs on one device.

    Parameters
    ----------
    system
        The :class:`~cubie_kernel.systems.ODESystem` to integrate.
    method
        Runge-Kutta method name, e.g. ``"rk4"`` or ``"euler"``.
    dt
        Step size of fixed-step methods.
    save_every
        Interval between saved states; None saves only the final state.
    target
        ``"auto"`` (cuda when a real GPU is visible, else cpu), ``"cpu"`` or
        ``"cuda"``.
    precision
        ``np.float32`` or ``np.float64`` (or their names).
    registry
        Buffer registry of this solver stack; a fresh one by default.
    **settings
        ``save_states``, ``save_observables`` (bools), ``threads_per_block``
        (cuda block size upper bound) and buffer locations such as
        ``state_location="shared"``.
    """

    def __init__(
        self,
        system: ODESystem,
        method: str = "rk4",
        dt: float | None = None,
        save_every: float | None = None,
        target: str = "auto",
        precision: Any = np.float64,
        registry: BufferRegistry | None = None,
        **settings: Any,
    ) -> None:
        if not isinstance(system, ODESystem):
            raise TypeError(f"system must be an ODESystem, got {type(system).__name__}")
        get_tableau(method)
        precision = check_precision(precision)
        if dt is None:
            raise ValueError(f"dt is required for the fixed-step method {method!r}")
        dt = check_finite_number(dt, "dt")
        if dt <= 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if save_every is not None:
            save_every = check_finite_number(save_every, "save_every")
            if save_every <= 0:
                raise ValueError(f"save_every must be > 0 (or None), got {save_every}")
        resolved = targets.resolve_target(target)
        run_settings = {k: settings.pop(k) for k in ("save_states", "save_observables") if k in settings}
        threads_per_block = settings.pop("threads_per_block", 128)
        locations = {k: v for k, v in settings.items() if k.endswith("_location")}
        unknown = sorted(set(settings) - set(locations))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {unknown}; valid keyword settings: "
                f"{', '.join(EXTRA_SETTINGS)} and <buffer>_location"
            )
        self.registry = registry if registry is not None else BufferRegistry()
        run = SingleIntegratorRun(
            IntegratorSettings(
                system=system,
                method=method,
                dt=dt,
                save_every=save_every,
                precision=precision,
                target=resolved,
                **run_settings,
            ),
            self.registry,
        )
        self._kernel = BatchSolverKernel(run, threads_per_block=threads_per_block)
        if locations:
            self._kernel.update(locations)

    # ---------------------------------------------------------------- access
    @property
    def kernel(self) -> BatchSolverKernel:
        """The :class:`~cubie_kernel.batch_kernel.BatchSolverKernel` behind this solver."""
        return self._kernel

    @property
    def system(self) -> ODESystem:
        return self._kernel.single_integrator.system

    @property
    def settings(self):
        return self._kernel.single_integrator.settings

    def update(self, updates: Mapping[str, Any] | None = None, **kwargs) -> set[str]:
        """Change settings (method, dt, save_every, precision, target, buffer locations).

        Unknown keys raise KeyError; invalid values raise ValueError and
        leave the solver unchanged.
        """
        updates = {**(updates or {}), **kwargs}
        if "target" in updates:
            updates["target"] = targets.resolve_target(updates["target"])
        return self._kernel.update(updates)

    # ----------------------------------------------------------------- solve
    def solve(
        self,
        initial_values: Mapping | None = None,
        parameters: Mapping | None = None,
        duration: float | None = None,
        t0: float = 0.0,
        warmup: float = 0.0,
        grid: str = "combinatorial",
        memory_bytes: int | None = None,
    ) -> xr.Dataset:
        """Integrate a batch and return its labelled results.

        Parameters
        ----------
        initial_values, parameters
            Dicts of name -> scalar or 1-D array; names not given take the
            system's defaults.
        duration
            Length of the saved interval (> 0).
        t0
            Start time of the run (the warm-up starts here).
        warmup
            Settling time integrated from ``t0`` but not saved (>= 0);
            saving starts at ``t0 + warmup``.
        grid
            ``"combinatorial"`` (Cartesian product, last name fastest) or
            ``"verbatim"`` (paired columns).
        memory_bytes
            Device memory budget for chunking; free device memory if None.

        Returns
        -------
        xarray.Dataset
            Dims ``run`` and ``time``; see :func:`cubie_kernel.results.batch_dataset`.
        """
        if duration is None:
            raise ValueError("duration is required")
        duration = check_finite_number(duration, "duration")
        if duration <= 0:
            raise ValueError(f"duration must be > 0, got {duration}")
        t0 = check_finite_number(t0, "t0")
        warmup = check_finite_number(warmup, "warmup")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        batch = build_batch(self.system, initial_values, parameters, grid)
        output = self._kernel.run(
            batch.initial_values, batch.parameters, duration, t0, warmup, memory_bytes
        )
        return self._dataset(batch, output, duration, t0, warmup)

    def _dataset(self, batch, output, duration, t0, warmup) -> xr.Dataset:
        from cubie_kernel.results import batch_dataset

        s = self.settings
        attrs = {
            "system": self.system.name,
            "method": get_tableau(s.method).name,
            "dt": s.dt,
            "save_every": "final state only" if s.save_every is None else s.save_every,
            "precision": np.dtype(s.precision).name,
            "target": s.target,
            "t0": t0,
            "duration": duration,
            "warmup": warmup,
            "device_chunks": output.n_chunks,
            "kernel_seconds": output.kernel_seconds,
        }
        for name, value in self.system.default_parameters.items():
            if name not in batch.coords:
                attrs[f"parameter_{name}"] = value
        return batch_dataset(
            self.system, output, batch.coords, attrs, s.save_states, s.save_observables
        )


def solve_ivp(
    system: ODESystem,
    y0: Mapping | None = None,
    parameters: Mapping | None = None,
    duration: float | None = None,
    method: str = "rk4",
    *,
    t0: float = 0.0,
    warmup: float = 0.0,
    grid: str = "combinatorial",
    **settings: Any,
) -> xr.Dataset:
    """Build a :class:`Solver` and solve one batch in one call.

    ``y0`` and ``parameters`` are dicts of name -> scalar or 1-D array;
    ``settings`` go to :class:`Solver` (``dt``, ``save_every``,
    ``target``, ``precision``, ...).
    """
    solver = Solver(system, method=method, **settings)
    return solver.solve(y0, parameters, duration, t0=t0, warmup=warmup, grid=grid)
