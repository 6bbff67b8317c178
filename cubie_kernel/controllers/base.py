"""What every step-size controller shares: settings, the error norm, the factory.

The contract
------------
A controller is a :class:`~cubie_kernel.factory.CompiledFactory` with two
device functions, both compiled lazily from plain Python for the settings'
target:

``control(h, clamped, state, proposed, error, accept, h_next, shared, persistent)``
    For every lane ``j`` of a block (see :mod:`cubie_kernel.targets`):
    ``h[j]`` (float64 holding a value of the run's precision) is the step
    just attempted, ``clamped[j]`` (int32) is nonzero when it was shortened
    to land on a time (the end of the warm-up or of the run); ``state`` holds the values before it, ``proposed`` the
    values after it and ``error`` its local error estimate ``dt * sum_i e_i
    k_i`` (lane-form arrays of the run's precision: state ``i`` of lane
    ``j`` at ``i * L + j``); ``shared``/``persistent`` are the controller's
    own memory regions (what its parent's child allocators hand it). It
    writes ``accept[j]`` (1 or 0, int32) and ``h_next[j]`` (a value of the
    run's precision), the step to try next, whether this one was accepted or
    not. One call settles the whole block: a call per lane would cost more
    than the arithmetic (array arguments are reference-counted per call).
``reset(shared, persistent, j)``
    Puts lane ``j``'s error history into its start-of-run state. The loop
    calls it once per run, before the first step.

The step size is never raised to ``dt_min`` here: ``dt_next`` may fall
below it, and the loop checks that and flags the run.

Error norm
----------
scipy's RMS convention (``scipy.integrate.solve_ivp``; Hairer, Norsett &
Wanner, *Solving ODEs I*, 2nd ed., Sect. II.4), in the run's precision
(float32 runs do no float64 arithmetic here: on most GPUs float64 runs at
1/32-1/64 of the float32 rate)::

    scale_i = atol_i + rtol_i * max(|state_i|, |proposed_i|)
    norm    = sqrt(mean_i (error_i / scale_i) ** 2)

A step is accepted when ``norm <= 1``. A non-finite ``proposed`` value makes
the norm infinite, and a non-finite norm always rejects the step with
``dt_next = dt * min_factor``, leaving the history untouched.

Step factor
-----------
After an accepted step each controller computes a factor from the norm
(floored at :data:`NORM_FLOOR`) and its history, clamped to
``[min_factor, max_factor]``. After a rejected step every controller uses
the elementary factor ``safety * norm**(-1/k)`` clamped to
``[min_factor, 1]``. Finally ``dt_next = min(dt * factor, dt_max)``. The exponents use
``k = error_order + 1``, where ``error_order`` is the order of the embedded
pair's LOWER-order solution (4 for Dormand-Prince 5(4)), so the local
error behaves like ``dt ** k``.

History lives in one persistent buffer, ``history``, registered under the
controller (size 0 where none is needed; element ``m`` of lane ``j`` at
``m * L + j``) and updated on accepted steps only, never by a clamped step:
its small error says nothing about the step size the solution allows, and
in a filter's history (PI, PID) it would shrink the steps after it.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.factory import CompiledFactory
from cubie_kernel.precision import check_precision, warn_unresolvable_rtol

#: Norms are floored at this before being raised to negative powers
#: (as RADAU5 does), so an exact step (norm 0) gives a finite factor.
NORM_FLOOR = 1e-10


# ---------------------------------------------------------------- validation
def _is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _as_float(value):
    """Real numbers become Python floats; anything else is left for validation."""
    return float(value) if _is_real(value) else value


def _as_tolerance(value):
    """Sequences become tuples of floats; scalars stay for :func:`per_state`."""
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, np.ndarray):
        return tuple(_as_float(v) for v in value.ravel()) if value.ndim else _as_float(value)
    if isinstance(value, Sequence):
        return tuple(_as_float(v) for v in value)
    return _as_float(value)


def per_state(value, n_states: int, name: str) -> tuple[float, ...]:
    """One finite, non-negative float per state, from a scalar or a sequence.

    Parameters
    ----------
    value
        A real scalar (used for every state) or a sequence of ``n_states``
        reals.
    n_states
        Number of states.
    name
        The setting's name, used in error messages.

    Raises
    ------
    ValueError
        Naming ``name``: wrong length, a non-real, negative or non-finite value.
    """
    if _is_real(value):
        values = (float(value),) * n_states
    elif isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ValueError(f"{name} must be a real number or a sequence of them, got {value!r}")
    else:
        values = tuple(np.asarray(value, dtype=object).ravel())
        if len(values) != n_states:
            raise ValueError(
                f"{name} has {len(values)} values but there are {n_states} states "
                f"(give one value per state, or a scalar)"
            )
        for i, v in enumerate(values):
            if not _is_real(v):
                raise ValueError(f"{name}[{i}] must be a real number, got {v!r}")
        values = tuple(float(v) for v in values)
    for i, v in enumerate(values):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}[{i}] must be finite and >= 0, got {v!r}")
    return values


def _check_real(name: str, value, low=None, high=None, low_open=False, allow_inf=False):
    if not _is_real(value) or math.isnan(value) or (math.isinf(value) and not allow_inf):
        kind = "a real number" if allow_inf else "a finite real number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


@attrs.frozen
class ControllerSettings:
    """Compile-time settings shared by every step-size controller.

    Parameters
    ----------
    n_states
        Number of state variables (>= 1).
    error_order
        Order of the embedded pair's LOWER-order solution (e.g. 4 for
        Dormand-Prince 5(4)); the exponents use ``k = error_order + 1``.
        Adaptive controllers need it; ``None`` only for ``"fixed"``.
    atol, rtol
        Absolute and relative tolerance per state: a scalar or one value
        per state, stored as a tuple (see :func:`per_state`). Defaults are
        scipy's ``solve_ivp`` defaults. Not both zero for any state.
    dt_min
        Smallest acceptable step; the loop (not the controller) checks it.
    dt_max
        Largest step ``dt_next`` may take (``inf``: unbounded).
    safety
        Multiplier on the ideal factor, in (0, 1].
    min_factor, max_factor
        Bounds of the factor ``dt_next / dt`` (``0 < min_factor <= 1 <=
        max_factor``).
    kp, ki, kd
        Proportional, integral and derivative gains of the PID family
        (:mod:`cubie_kernel.controllers.pid`); ``None`` picks the named
        controller's default gains. Controllers without gains reject
        values they would ignore.
    precision
        ``np.float32`` or ``np.float64``: the state arrays' type.
    target
        ``"cpu"`` or ``"cuda"``.
    """

    n_states: int
    error_order: int | None = None
    atol: tuple = attrs.field(default=1e-6, converter=_as_tolerance)
    rtol: tuple = attrs.field(default=1e-3, converter=_as_tolerance)
    dt_min: float = attrs.field(default=1e-12, converter=_as_float)
    dt_max: float = attrs.field(default=math.inf, converter=_as_float)
    safety: float = attrs.field(default=0.9, converter=_as_float)
    min_factor: float = attrs.field(default=0.2, converter=_as_float)
    max_factor: float = attrs.field(default=10.0, converter=_as_float)
    kp: float | None = attrs.field(default=None, converter=_as_float)
    ki: float | None = attrs.field(default=None, converter=_as_float)
    kd: float | None = attrs.field(default=None, converter=_as_float)
    precision: type = np.float64
    target: str = "cpu"

    def __attrs_post_init__(self):
        n = self.n_states
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_states must be an int >= 1, got {n!r}")
        object.__setattr__(self, "n_states", int(n))
        order = self.error_order
        if order is not None:
            if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
                raise ValueError(f"error_order must be an int >= 1 or None, got {order!r}")
            object.__setattr__(self, "error_order", int(order))
        atol = per_state(self.atol, self.n_states, "atol")
        rtol = per_state(self.rtol, self.n_states, "rtol")
        for i, (a, r) in enumerate(zip(atol, rtol)):
            if a == 0.0 and r == 0.0:
                raise ValueError(
                    f"atol[{i}] and rtol[{i}] are both zero: state {i} has no tolerance"
                )
        object.__setattr__(self, "atol", atol)
        object.__setattr__(self, "rtol", rtol)
        _check_real("dt_min", self.dt_min, low=0.0)
        _check_real("dt_max", self.dt_max, low=0.0, low_open=True, allow_inf=True)
        if self.dt_max < self.dt_min:
            raise ValueError(f"dt_max ({self.dt_max}) must be >= dt_min ({self.dt_min})")
        _check_real("safety", self.safety, low=0.0, low_open=True, high=1.0)
        _check_real("min_factor", self.min_factor, low=0.0, low_open=True, high=1.0)
        _check_real("max_factor", self.max_factor, low=1.0)
        for gain in ("kp", "ki", "kd"):
            value = getattr(self, gain)
            if value is not None:
                _check_real(gain, value)
        object.__setattr__(self, "precision", check_precision(self.precision))
        targets.check_target_name(self.target)
        if self.error_order is not None:  # adaptive: rtol matters
            warn_unresolvable_rtol(self.rtol, self.precision)


# ---------------------------------------------------------------- error norm
def build_error_norm(settings: ControllerSettings):
    """Device function ``error_norm(state, proposed, error, j) -> precision``.

    The RMS norm of the module docstring, in the settings' precision
    (tolerances and constants are closure constants of that type); ``inf``
    when any ``proposed`` value of lane ``j`` is non-finite.
    """
    backend = targets.get_target(settings.target)
    precision = np.dtype(settings.precision).type
    lanes = backend.lanes(precision)
    n_states = settings.n_states
    atol = tuple(precision(a) for a in settings.atol)
    rtol = tuple(precision(r) for r in settings.rtol)
    inv_n = precision(1.0 / n_states)
    inf = precision(math.inf)
    zero = precision(0.0)

    def error_norm(state, proposed, error, j):
        total = zero
        finite = True
        for i in range(n_states):  # no early exit: the caller's lane loop vectorises
            new = proposed[i * lanes + j]
            finite = finite & math.isfinite(new)
            scale = atol[i] + rtol[i] * max(abs(state[i * lanes + j]), abs(new))
            ratio = error[i * lanes + j] / scale
            total += ratio * ratio
        norm = precision(math.sqrt(total * inv_n))
        return norm if finite else inf

    return backend.device_jit(error_norm, inline=True)


# ------------------------------------------------------------------ factory
class StepController(CompiledFactory):
    """Base factory of a step-size controller (see the module docstring).

    Subclasses set :attr:`name`, :attr:`is_adaptive` and
    :attr:`history_size`, and implement :meth:`build_control` and
    :meth:`build_reset` (plain Python functions; this class compiles them).

    Parameters
    ----------
    settings
        The controller's :class:`ControllerSettings`.
    registry
        The :class:`~cubie_kernel.buffers.BufferRegistry` in which the
        ``history`` buffer is registered under this controller.
    """

    #: Name in :data:`cubie_kernel.controllers.CONTROLLER_NAMES`.
    name: str = ""
    #: False only for the fixed-step controller.
    is_adaptive: bool = True
    #: Elements of the persistent ``history`` buffer.
    history_size: int = 0

    def __init__(self, settings: ControllerSettings, registry) -> None:
        if not isinstance(settings, ControllerSettings):
            raise TypeError(f"settings must be ControllerSettings, got {type(settings).__name__}")
        super().__init__(settings)
        self._registry = registry
        self._reset = None
        self.check_settings(settings)
        self.register_buffers()

    @property
    def registry(self):
        return self._registry

    def register_buffers(self) -> None:
        self._registry.register(
            "history", self, self.history_size, location="local", persistent=True
        )

    def check_settings(self, settings: ControllerSettings) -> None:
        """Raise ValueError if ``settings`` cannot drive this controller."""
        if self.is_adaptive and settings.error_order is None:
            raise ValueError(
                f"controller {self.name!r} needs error_order (the order of the embedded "
                "pair's lower-order solution); only 'fixed' works without one"
            )

    def settings_changed(self, changed: set[str]) -> None:
        self.check_settings(self.compile_settings)

    @property
    def k(self) -> int:
        """Exponent denominator ``error_order + 1``."""
        return self.compile_settings.error_order + 1

    # ------------------------------------------------------------- building
    @property
    def lanes(self) -> int:
        """Runs per block on the settings' target (the history's lane stride)."""
        s = self.compile_settings
        return targets.get_target(s.target).lanes(s.precision)

    def build_accepted_factor(self):  # pragma: no cover - abstract
        """Plain Python ``factor(dt, floored_norm, h0, h1) -> (factor, h0, h1)``.

        The raw step factor after an ACCEPTED step (clamped by the caller)
        and the new history: ``h0``, ``h1`` are the lane's first two history
        elements (1 where the history is shorter; ignored there), scalars of
        the run's precision.
        """
        raise NotImplementedError

    def build_reset(self, alloc_history):  # pragma: no cover - abstract
        raise NotImplementedError

    def build_control(self, error_norm, alloc_history):
        """The shared control frame around :meth:`build_accepted_factor`.

        For every lane: non-finite norm: reject, ``dt * min_factor``.
        Rejected step: the elementary factor ``safety * r**(-1/k)`` in
        ``[min_factor, 1]`` (a filter's history of small errors must never
        keep the size of a step that failed). Accepted step: the
        controller's own factor in ``[min_factor, max_factor]``. Then
        ``min(dt * factor, dt_max)``.
        """
        s = self.compile_settings
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        accepted_factor = backend.device_jit(self.build_accepted_factor(), inline=True)
        safety, min_factor, max_factor, dt_max = (
            precision(v) for v in (s.safety, s.min_factor, s.max_factor, s.dt_max)
        )
        exp_reject = precision(-1.0 / self.k)
        norm_floor = precision(NORM_FLOOR)
        one = precision(1.0)
        lanes = self.lanes
        n_history = self.history_size

        def control(h, clamped, state, proposed, error, accept, h_next, shared, persistent):
            history = alloc_history(shared, persistent)
            for j in range(lanes):  # the norms first (this loop vectorises)...
                h_next[j] = error_norm(state, proposed, error, j)
            for j in range(lanes):  # ...then the factors (powers: calls, scalar)
                dt = precision(h[j])
                norm = precision(h_next[j])
                if not math.isfinite(norm):
                    accept[j] = 0
                    h_next[j] = min(dt * min_factor, dt_max)
                    continue
                floored = max(norm, norm_floor)
                if norm <= one:
                    h0 = history[j] if n_history > 0 else one
                    h1 = history[lanes + j] if n_history > 1 else one
                    factor, h0, h1 = accepted_factor(dt, floored, h0, h1)
                    if n_history > 0 and clamped[j] == 0:
                        history[j] = h0
                    if n_history > 1 and clamped[j] == 0:
                        history[lanes + j] = h1
                    factor = min(max(factor, min_factor), max_factor)
                    accept[j] = 1
                else:
                    factor = min(max(safety * floored**exp_reject, min_factor), one)
                    accept[j] = 0
                h_next[j] = min(dt * factor, dt_max)

        return control

    def build(self):
        s = self.compile_settings
        self.check_settings(s)
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        alloc_history = self._registry.get_allocator("history", self, s.target, precision)
        error_norm = build_error_norm(s) if self.is_adaptive else None
        self._reset = backend.device_jit(self.build_reset(alloc_history))
        return backend.device_jit(self.build_control(error_norm, alloc_history))

    @property
    def reset_function(self):
        """The compiled ``reset(shared, persistent, j)``, rebuilt with the controller."""
        self.device_function
        return self._reset
