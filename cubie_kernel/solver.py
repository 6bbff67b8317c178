"""The user-facing API: ``Solver`` and the one-call ``solve_ivp``."""

from __future__ import annotations

from typing import Any, Mapping

import attrs
import numpy as np
import xarray as xr

from cubie_kernel import targets
from cubie_kernel.algorithms.tableaus import get_tableau
from cubie_kernel.batch_kernel import BatchSolverKernel
from cubie_kernel.buffers import BufferRegistry
from cubie_kernel.inputs import build_batch, check_finite_number
from cubie_kernel.integrators.single_run import SETTINGS as RUN_SETTINGS
from cubie_kernel.integrators.single_run import (
    IntegratorSettings,
    SingleIntegratorRun,
    split_output_settings,
)
from cubie_kernel.outputs import Output
from cubie_kernel.precision import check_precision
from cubie_kernel.results import batch_dataset, check_result_names
from cubie_kernel.systems import ODESystem

class Solver:
    """Integrate one ODE system over batches of runs on one device.

    Parameters
    ----------
    system
        The :class:`~cubie_kernel.systems.ODESystem` to integrate.
    method
        Runge-Kutta method name: fixed-step ``"euler"``, ``"rk4"``, or an
        embedded pair (``"rk45"``/``"dopri5"``, ``"tsit5"``, ``"rk23"``,
        ``"cash_karp"``, ``"heun_euler"``, ``"vern6"``) that adapts its step.
    dt
        Step size of fixed-step integration (required for it).
    save_every
        Interval between saved states; None saves only the final state.
        Shorthand for ``output=Output(save_every=...)``.
    output
        The declared outputs (:class:`~cubie_kernel.outputs.Output`, or a
        mapping of its fields): time series, summary metrics, final state,
        per-save counters. Give either ``output`` or the shorthands
        ``save_every``/``save_states``/``save_observables``/``save_counters``.
    target
        ``"auto"`` (cuda when a real GPU is visible, else cpu), ``"cpu"`` or
        ``"cuda"``.
    precision
        ``np.float32`` or ``np.float64`` (or their names).
    registry
        Buffer registry of this solver stack; a fresh one by default.
    **settings
        Step control: ``controller`` (``"fixed"``, ``"i"``, ``"pi"``,
        ``"pid"``, ``"gustafsson"``; default: ``"pi"`` for adaptive methods),
        ``atol``, ``rtol`` (scalar or one per state; scipy's defaults 1e-6
        and 1e-3), ``dt0`` (first step; estimated per run when None),
        ``dt_min``, ``dt_max``, ``max_steps`` (attempted steps per run),
        ``safety``, ``min_factor``, ``max_factor``, gains ``kp``/``ki``/``kd``.
        Events: ``events`` (:class:`~cubie_kernel.Event` s, or mappings of
        their fields) whose zero crossings each run records, ends at or
        resets at, and ``max_resets`` (resets per run before it stops with
        ``too_many_resets``; default 10,000).
        Output shorthands: ``save_states``, ``save_observables`` (True: all,
        False: none), ``save_counters`` (cumulative
        ``n_steps_at_save``/``n_rejected_at_save`` per save).
        Device:
        ``threads_per_block`` and buffer locations such as
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
        output: Output | Mapping | None = None,
        **settings: Any,
    ) -> None:
        if not isinstance(system, ODESystem):
            raise TypeError(f"system must be an ODESystem, got {type(system).__name__}")
        check_result_names(system)
        precision = check_precision(precision)
        for name, value in (("dt", dt), ("save_every", save_every), ("dt0", settings.get("dt0"))):
            if value is not None:
                check_finite_number(value, name)
        threads_per_block = settings.pop("threads_per_block", 128)
        locations = {k: v for k, v in settings.items() if k.endswith("_location")}
        run_settings = {k: v for k, v in settings.items() if k in RUN_SETTINGS}
        unknown = sorted(set(settings) - set(locations) - set(run_settings))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {unknown}; valid keyword settings: "
                f"{', '.join(sorted(set(RUN_SETTINGS) - {'method', 'dt', 'save_every', 'target', 'precision', 'output'}))}, "
                "threads_per_block and <buffer>_location"
            )
        if save_every is not None:
            run_settings["save_every"] = save_every
        if output is not None:
            run_settings["output"] = output
        run_settings = split_output_settings(run_settings)
        get_tableau(method)
        resolved = targets.resolve_target(target)
        self.registry = registry if registry is not None else BufferRegistry()
        run = SingleIntegratorRun(
            IntegratorSettings(
                system=system,
                method=method,
                dt=dt,
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

        Unknown keys and invalid values raise ValueError (as the
        constructor does) and leave the solver unchanged.
        """
        updates = {**(updates or {}), **kwargs}
        if "target" in updates:
            updates["target"] = targets.resolve_target(updates["target"])
        return self._kernel.update(updates)

    # ----------------------------------------------------------------- solve
    def compile(self) -> float:
        """Compile the solver's kernel now instead of at the first solve; returns seconds.

        On the cpu target a kernel compiled before (by any process, for the
        same settings) is loaded from the disk cache
        (:mod:`cubie_kernel.kernel_cache`) instead.
        """
        return self._kernel.compile()

    def solve(
        self,
        initial_values: Mapping | None = None,
        parameters: Mapping | None = None,
        duration: float | None = None,
        t0: float = 0.0,
        warmup: float = 0.0,
        grid: str = "combinatorial",
        memory_bytes: int | None = None,
        max_launch_runs: int | None = None,
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
        max_launch_runs
            Runs per kernel launch, instead of sizing launches from memory
            (for callers that planned the batch's memory themselves).

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
            batch.initial_values, batch.parameters, duration, t0, warmup, memory_bytes,
            max_launch_runs,
        )
        return self._dataset(batch, output, duration, t0, warmup)

    def empty_result(
        self,
        duration: float,
        t0: float = 0.0,
        warmup: float = 0.0,
        swept: tuple[str, ...] = (),
    ) -> xr.Dataset:
        """The Dataset a solve returns, for zero runs: its layout, without compiling.

        Parameters
        ----------
        duration, t0, warmup
            As in :meth:`solve` (they set the ``time`` coordinate).
        swept
            Coordinate names of the swept inputs (``initial_<state>`` or a
            parameter name), as ``solve`` would label them.

        Returns
        -------
        xarray.Dataset
            Every variable, coordinate, dtype and attribute of a result, with
            ``run`` of length 0.
        """
        system = self.system
        batch = build_batch(system)
        empty = np.empty((0,))
        batch = attrs.evolve(
            batch,
            initial_values=np.empty((system.n_states, 0)),
            parameters=np.empty((system.n_parameters, 0)),
            coords={name: empty for name in swept},
        )
        output = self._kernel.empty_output(duration, t0, warmup)
        return self._dataset(batch, output, duration, t0, warmup)

    def _dataset(self, batch, output, duration, t0, warmup) -> xr.Dataset:
        s = self.settings
        attrs = {
            "system": self.system.name,
            "method": get_tableau(s.method).name,
            "controller": s.controller_name,
            "save_every": "final state only" if s.save_every is None else s.save_every,
            "saving": "dense output" if s.dense_output else "steps land on save times",
            "summaries": ", ".join(r.label for r in s.output.summaries) or "none",
            "summarise_every": (
                "whole run" if s.output.summarise_every is None else s.output.summarise_every
            ),
            "precision": np.dtype(s.precision).name,
            "target": s.target,
            "t0": t0,
            "duration": duration,
            "warmup": warmup,
            "max_steps": s.max_steps,
            "events": ", ".join(e.name for e in s.events) or "none",
            "device_chunks": output.n_chunks,
            "kernel_seconds": output.kernel_seconds,
        }
        if s.controller_name == "fixed":
            attrs["dt"] = s.dt
        else:
            attrs.update(
                atol=np.asarray(s.controller_settings().atol),
                rtol=np.asarray(s.controller_settings().rtol),
                dt0="estimated per run" if s.dt0 is None else s.dt0,
                dt_min=s.dt_min,
                dt_max=s.dt_max,
            )
        for name, value in self.system.default_parameters.items():
            if name not in batch.coords:
                attrs[f"parameter_{name}"] = value
        return batch_dataset(self.system, output, batch.coords, attrs, s.output, s.events)


def solve_ivp(
    system: ODESystem,
    y0: Mapping | None = None,
    parameters: Mapping | None = None,
    duration: float | None = None,
    method: str = "dormand_prince_54",
    *,
    t0: float = 0.0,
    warmup: float = 0.0,
    grid: str = "combinatorial",
    **settings: Any,
) -> xr.Dataset:
    """Build a :class:`Solver` and solve one batch in one call.

    ``y0`` is a dict of state name -> scalar or 1-D array, or, as in scipy,
    a sequence of one initial value per state (in ``system.state_names``
    order); ``parameters`` a dict of name -> scalar or 1-D array;
    ``settings`` go to :class:`Solver` (``rtol``, ``atol``, ``dt`` for
    fixed-step methods, ``save_every``, ``target``, ``precision``, ...).
    The default method is Dormand-Prince 5(4), as in scipy's ``solve_ivp``.

    Raises
    ------
    ValueError
        A ``y0`` sequence whose length is not the number of states (naming
        ``y0`` and the states), and whatever :class:`Solver` and
        :meth:`Solver.solve` reject.
    """
    if y0 is not None and not isinstance(y0, Mapping):
        values = np.asarray(y0, dtype=object)
        names = system.state_names
        if values.ndim != 1 or len(values) != len(names):
            raise ValueError(
                f"y0 must be a dict of state -> value or a sequence of {len(names)} values, "
                f"one per state {list(names)}; got {y0!r}"
            )
        y0 = dict(zip(names, values.tolist()))
    solver = Solver(system, method=method, **settings)
    return solver.solve(y0, parameters, duration, t0=t0, warmup=warmup, grid=grid)
