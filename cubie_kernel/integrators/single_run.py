"""``SingleIntegratorRun``: one run's device function, assembled.

Builds and owns the layers of one run (system -> step -> output -> loop),
routes setting changes to the layer that owns each setting, and answers
memory questions through the buffer registry: it registers no buffers of
its own, only the loop as its child.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.algorithms.erk_step import ERKStep, ERKStepSettings
from cubie_kernel.algorithms.tableaus import get_tableau
from cubie_kernel.integrators.loop import IVPLoop, LoopSettings
from cubie_kernel.outputs import OutputFlags, OutputFunctions, OutputSettings
from cubie_kernel.precision import check_precision
from cubie_kernel.systems import ODESystem

#: Settings a SingleIntegratorRun accepts through ``update``.
SETTINGS = ("method", "dt", "save_every", "precision", "target", "save_states", "save_observables")


@attrs.frozen
class IntegratorSettings:
    """Everything that decides one run's compiled code."""

    system: ODESystem
    method: str = "rk4"
    dt: float = 1e-3
    save_every: float | None = None
    precision: type = np.float64
    target: str = "cpu"
    save_states: bool = True
    save_observables: bool = True

    def __attrs_post_init__(self):
        get_tableau(self.method)
        targets.check_target_name(self.target)
        check_precision(self.precision)
        if not (isinstance(self.dt, (int, float)) and np.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be a finite number > 0, got {self.dt!r}")
        if self.save_every is not None:
            if not (np.isfinite(self.save_every) and self.save_every > 0):
                raise ValueError(f"save_every must be > 0 or None, got {self.save_every!r}")
            if self.dt > self.save_every:
                raise ValueError(
                    f"dt ({self.dt}) must not exceed save_every ({self.save_every})"
                )


class SingleIntegratorRun:
    """Assembles system, step, output functions and loop for one run.

    Parameters
    ----------
    settings
        The run's :class:`IntegratorSettings`.
    registry
        The :class:`~cubie_kernel.buffers.BufferRegistry` every layer
        registers its buffers in.
    """

    def __init__(self, settings: IntegratorSettings, registry) -> None:
        self.settings = settings
        self.registry = registry
        precision = check_precision(settings.precision)
        self.step = ERKStep(
            ERKStepSettings(
                tableau=get_tableau(settings.method),
                system=settings.system,
                precision=precision,
                target=settings.target,
            ),
            registry,
        )
        self.output = OutputFunctions(
            OutputSettings(
                system=settings.system,
                flags=self._flags(settings),
                precision=precision,
                target=settings.target,
            )
        )
        self.loop = IVPLoop(
            LoopSettings(
                system=settings.system,
                dt=float(settings.dt),
                save_every=None if settings.save_every is None else float(settings.save_every),
                precision=precision,
                target=settings.target,
            ),
            self.step,
            self.output,
            registry,
        )
        registry.register_child(self, self.loop, "loop")

    @staticmethod
    def _flags(settings: IntegratorSettings) -> OutputFlags:
        return OutputFlags(
            save_states=bool(settings.save_states),
            save_observables=bool(settings.save_observables),
            save_initial=settings.save_every is not None,
        )

    # ----------------------------------------------------------------- update
    def update(self, updates: Mapping[str, Any], silent: bool = False) -> set[str]:
        """Change run settings; returns the recognised keys.

        Raises KeyError for keys that are not settings (unless ``silent``)
        and ValueError for invalid values, before anything changes.
        """
        recognised = {k for k in updates if k in SETTINGS}
        unknown = set(updates) - recognised
        if unknown and not silent:
            raise KeyError(f"unknown setting(s) {sorted(unknown)}; valid: {sorted(SETTINGS)}")
        if not recognised:
            return recognised
        changes = {k: updates[k] for k in recognised}
        if "precision" in changes:
            changes["precision"] = check_precision(changes["precision"])
        new = attrs.evolve(self.settings, **changes)  # validates
        self.settings = new
        precision = new.precision
        self.step.update_compile_settings(
            tableau=get_tableau(new.method), precision=precision, target=new.target
        )
        self.output.update_compile_settings(
            flags=self._flags(new), precision=precision, target=new.target
        )
        self.loop.update_compile_settings(
            dt=float(new.dt),
            save_every=None if new.save_every is None else float(new.save_every),
            precision=precision,
            target=new.target,
        )
        # the loop's error buffer depends on whether the method is adaptive
        self.loop.register_buffers()
        return recognised

    # ---------------------------------------------------------------- queries
    @property
    def device_function(self):
        """The per-run loop device function (built lazily)."""
        return self.loop.device_function

    @property
    def compile_flags(self) -> OutputFlags:
        return self.output.flags

    @property
    def precision(self) -> type:
        return self.settings.precision

    @property
    def target(self) -> str:
        return self.settings.target

    @property
    def system(self) -> ODESystem:
        return self.settings.system

    @property
    def shared_memory_elements(self) -> int:
        return self.registry.shared_buffer_size(self)

    @property
    def local_memory_elements(self) -> int:
        return self.registry.persistent_local_buffer_size(self)

    @property
    def shared_memory_bytes(self) -> int:
        return self.shared_memory_elements * np.dtype(self.precision).itemsize

    @property
    def n_saved_states(self) -> int:
        return self.output.n_saved_states

    @property
    def n_saved_observables(self) -> int:
        return self.output.n_saved_observables
