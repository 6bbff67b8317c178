"""Event location on the device: zero crossings found on each step's interpolant.

The loop (:mod:`cubie_kernel.integrators.loop`) asks, after every accepted
step from ``t_old`` to ``t_new = t_old + span``, whether an event's
condition ``g`` changed sign (in its direction) between the step's ends
(``check``); only then is anything located, unless an event asks to look
inside every step (``Event.interior_points``: the step is cut into that
many plus one pieces, whose ends are compared, so a crossing and its return
within one step are seen). A crossing is found by root finding on
``g(y(theta))``, ``theta`` in ``(0, 1]``, where ``y`` is the step's own
continuous extension (methods with dense output) or the cubic Hermite
interpolant through both ends and their derivatives (every other method,
fixed steps included), so steps are never shortened to find events. The
root finder is the Illinois variant of regula falsi, stopped when the
bracket is narrower than ``theta_tolerance`` (tied to the step's relative
tolerance, see :func:`theta_tolerance`); it returns the bracket's end on
the far side of the crossing, so a state taken there has crossed and a
reset there does not fire the same crossing again.

Crossings are counted and recorded (time and state) in time order within a
step (``scan``): all of them, one event's several included, up to the
first event that acts (terminal, or with a reset) at ``theta_a``; the rest
of the step is discarded, and crossings after ``theta_a`` are found again,
if they still happen, after the reset.

Buffers (registered under the loop's ``events`` child, persistent, sizes
in elements): ``event_values`` (g at the run's current state), ``event_trial``
(g at the step's end), ``event_probe`` (g inside the root finder),
``event_theta`` (each event's crossing in this step, 2 when none), each
``n_events``; ``event_state`` (``n_states``, an interpolated state),
``event_slopes`` (``2 n_states`` for the Hermite interpolant, else 0) and
``event_dense`` (the interpolant's data of a recomputed crossing step, else 0).
"""

from __future__ import annotations

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.factory import CompiledFactory
from cubie_kernel.systems import ODESystem
from cubie_kernel.systems.events import Event, event_functions

#: Interpolants a step's crossings are located on: the step's continuous
#: extension from the stages a dense step stored, the same from the stages
#: recomputed for a crossing step only (explicit Runge-Kutta: no step pays
#: for storing them), or cubic Hermite.
INTERPOLANTS = ("step", "recomputed", "hermite")

#: Most root-finder iterations per crossing (Illinois converges superlinearly:
#: about 6-10 are used at the tightest tolerance).
MAX_ITERATIONS = 60

#: Default cap on resets per run (terminal events and records do not count).
DEFAULT_MAX_RESETS = 10_000

#: ``theta`` of an event that did not cross in this step.
NO_CROSSING = 2.0


def theta_tolerance(precision: type, rtol=None) -> float:
    """Width of the root finder's final bracket, as a fraction of the step.

    ``1e-3 * min(rtol)`` (the interpolant is only as accurate as the step,
    so locating beyond it buys nothing), never below 4 ulp of 1 in the
    run's precision; 4 ulp without a tolerance (fixed steps).
    """
    floor = 4.0 * float(np.finfo(precision).eps)
    if rtol is None:
        return floor
    return max(floor, 1e-3 * float(np.min(rtol)))


@attrs.frozen
class EventSettings:
    """Compile-time settings of event location."""

    system: ODESystem
    events: tuple[Event, ...]
    interpolant: str = "hermite"
    dense_elements: int = 0
    theta_tolerance: float = 1e-12
    precision: type = np.float64
    target: str = "cpu"

    def __attrs_post_init__(self):
        if self.interpolant not in INTERPOLANTS:
            raise ValueError(
                f"interpolant must be one of {INTERPOLANTS}, got {self.interpolant!r}"
            )


class EventFunctions(CompiledFactory):
    """Factory of the device functions that find, record and act on crossings.

    ``device_function`` is a tuple ``(start, trial, check, scan, state_at,
    reset, clear)``, each per lane ``j`` (see :meth:`build`); ``es`` and
    ``ep`` in their signatures are this factory's shared and persistent
    regions (the loop's child allocators), ``stages`` the step's
    ``dense_stages`` (unused by the Hermite interpolant).
    """

    def __init__(self, settings: EventSettings, step, registry) -> None:
        super().__init__(settings)
        self.step = step
        self._registry = registry
        self.register_buffers()

    @property
    def registry(self):
        return self._registry

    def dependencies(self):
        return (self.step,) if self.compile_settings.interpolant != "hermite" else ()

    @property
    def n_events(self) -> int:
        return len(self.compile_settings.events)

    def register_buffers(self) -> None:
        s = self.compile_settings
        n, m = s.system.n_states, len(s.events)
        for name in ("event_values", "event_trial", "event_probe", "event_theta"):
            self._registry.register(name, self, m, persistent=True)
        self._registry.register("event_state", self, n if m else 0, persistent=True)
        hermite = m and s.interpolant == "hermite"
        self._registry.register("event_slopes", self, 2 * n if hermite else 0, persistent=True)
        recomputed = m and s.interpolant == "recomputed"
        self._registry.register("event_dense", self, s.dense_elements if recomputed else 0,
                                persistent=True)

    def settings_changed(self, changed: set[str]) -> None:
        self.register_buffers()

    def build(self):
        s = self.compile_settings
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        L = backend.lanes(precision)
        jit = backend.device_jit
        registry = self._registry

        def allocator(name):
            return registry.get_allocator(name, self, s.target, precision)

        alloc_values = allocator("event_values")
        alloc_trial = allocator("event_trial")
        alloc_probe = allocator("event_probe")
        alloc_theta = allocator("event_theta")
        alloc_state = allocator("event_state")
        alloc_slopes = allocator("event_slopes")
        n_states = s.system.n_states
        n_events = len(s.events)
        generated = event_functions(s.system, s.events, precision)
        values_of = jit(generated["event_values_lane"])
        values_at = jit(generated["event_values_lane"], inline=True)
        reset_of = jit(generated["event_reset_lane"])
        directions = tuple(int(e.direction) for e in s.events)
        acting = tuple(bool(e.acts) for e in s.events)
        max_records = tuple(int(e.max_records) for e in s.events)
        interior = tuple(int(e.interior_points) for e in s.events)
        scans_inside = max(interior, default=0) > 0
        # a bound on the crossings one step can hold: each piece of each event, twice
        max_crossings = 2 * sum(p + 1 for p in interior) + 2
        hermite = s.interpolant == "hermite"
        recomputed = s.interpolant == "recomputed"
        if hermite:
            dxdt = jit(s.system.lane_functions(precision)["dxdt_lane"])
            interpolate = None
            end_derivative = None
        else:
            dxdt = None
            interpolate = self.step.interpolate_function
            end_derivative = self.step.end_derivative_function
        if recomputed:
            dense_stages_lane = self.step.dense_stages_lane_function
        tolerance = precision(s.theta_tolerance)
        zero, one, half = precision(0.0), precision(1.0), precision(0.5)
        two, three = precision(2.0), precision(3.0)
        nan = np.nan
        no_crossing = NO_CROSSING

        def crossed(before, after, direction):
            if direction > 0:
                return before < zero and after >= zero
            if direction < 0:
                return before > zero and after <= zero
            return (before < zero and after >= zero) or (before > zero and after <= zero)

        crossed = jit(crossed, inline=True)

        def start(state, params, t, j, es, ep):
            """g at the run's current state becomes the reference of the next step."""
            values_of(state, params, precision(t), alloc_values(es, ep), j, L)

        start = jit(start)

        def trial(proposed, params, t_new, j, es, ep):
            """g at the step's end (``event_trial``); written without calls or
            branches, so that a loop over the lanes vectorises."""
            values_at(proposed, params, precision(t_new), alloc_trial(es, ep), j, L)

        trial = jit(trial, inline=True)

        def check(j, es, ep):
            """1 when lane ``j``'s step must be scanned (some event crossed between
            the step's ends, or some event looks inside every step), else 0, and
            g at the step's end becomes the next step's reference."""
            values = alloc_values(es, ep)
            after = alloc_trial(es, ep)
            found = 1 if scans_inside else 0
            for e in range(n_events):
                if crossed(values[e * L + j], after[e * L + j], directions[e]):
                    found = 1
            if found == 0:
                for e in range(n_events):
                    values[e * L + j] = after[e * L + j]
            return found

        check = jit(check, inline=True)

        def state_at(theta, state, proposed, stages, span, out, j, es, ep):
            """The interpolated state at ``t_old + theta * span`` into ``out`` (lane form)."""
            if hermite:
                slopes = alloc_slopes(es, ep)
                th = precision(theta)
                th2 = th * th
                th3 = th2 * th
                h00 = two * th3 - three * th2 + one
                h10 = th3 - two * th2 + th
                h01 = three * th2 - two * th3
                h11 = th3 - th2
                h = precision(span)
                for k in range(n_states):
                    out[k * L + j] = (
                        h00 * state[k * L + j] + h01 * proposed[k * L + j]
                        + h * (h10 * slopes[k * L + j] + h11 * slopes[(n_states + k) * L + j])
                    )
            else:
                interpolate(stages, precision(span), precision(theta), out, j)

        state_at = jit(state_at)

        def g_at(e, theta, state, proposed, params, stages, t_old, span, j, es, ep):
            point = alloc_state(es, ep)
            probe = alloc_probe(es, ep)
            state_at(theta, state, proposed, stages, span, point, j, es, ep)
            values_of(point, params, precision(t_old + theta * span), probe, j, L)
            return probe[e * L + j]

        g_at = jit(g_at)

        def find_root(e, a, b, ga, gb, state, proposed, params, stages, t_old, span, j, es,
                      ep):
            """theta of event ``e``'s crossing in the bracket ``[a, b]`` (where g is
            ``ga``, ``gb``): the far end of the final bracket (in the run's
            precision; only the time it maps to is float64)."""
            side = 0
            for _ in range(MAX_ITERATIONS):
                if b - a <= tolerance or gb == zero:
                    break
                c = b - gb * (b - a) / (gb - ga)
                if not (a < c < b):
                    c = half * (a + b)
                    if not (a < c < b):  # the bracket is as narrow as the precision allows
                        break
                gc = precision(g_at(e, c, state, proposed, params, stages, t_old, span, j,
                                    es, ep))
                if gc == zero:
                    b, gb = c, gc
                    break
                if (gc > zero) == (gb > zero):
                    b, gb = c, gc
                    if side == -1:
                        ga *= half
                    side = -1
                else:
                    a, ga = c, gc
                    if side == 1:
                        gb *= half
                    side = 1
            return b

        find_root = jit(find_root)

        def next_crossing(e, after, g_after, state, proposed, params, stages, t_old, span, j,
                          es, ep):
            """theta of event ``e``'s first crossing after ``theta = after`` (where g is
            ``g_after``), or NO_CROSSING: the step is cut into ``interior_points + 1``
            pieces, each piece's ends compared, the first that crosses searched."""
            trial = alloc_trial(es, ep)
            pieces = interior[e] + 1
            a = precision(after)
            ga = precision(g_after)
            for k in range(1, pieces + 1):
                b = one if k == pieces else precision(k / pieces)
                if b <= a:
                    continue
                if k == pieces:
                    gb = trial[e * L + j]
                else:
                    gb = precision(g_at(e, b, state, proposed, params, stages, t_old, span, j,
                                        es, ep))
                if crossed(ga, gb, directions[e]):
                    return find_root(e, a, b, ga, gb, state, proposed, params, stages, t_old,
                                     span, j, es, ep)
                a, ga = b, gb
            return precision(no_crossing)

        next_crossing = jit(next_crossing)

        def record(e, theta, run, state, proposed, stages, t_old, span, event_times,
                   event_states, event_counts, j, es, ep):
            """Count one crossing of event ``e``; record it up to ``max_records``."""
            point = alloc_state(es, ep)
            index = event_counts[e, run]
            event_counts[e, run] = index + 1
            if index < max_records[e]:
                event_times[index, e, run] = t_old + theta * span
                state_at(theta, state, proposed, stages, span, point, j, es, ep)
                for k in range(n_states):
                    event_states[index, e * n_states + k, run] = point[k * L + j]

        record = jit(record)

        def scan(run, counting, state, proposed, params, stages, t_old, span, event_times,
                 event_states, event_counts, j, es, ep):
            """Find, count and record the step's crossings (``state`` -> ``proposed``)
            in time order, up to the first event that acts.

            Returns that event (-1: none) and its theta. Without one, g at the
            step's end becomes the next step's reference (with one, the caller
            sets it after the reset: :func:`start`).
            """
            values = alloc_values(es, ep)
            trial = alloc_trial(es, ep)
            thetas = alloc_theta(es, ep)
            if hermite:
                slopes = alloc_slopes(es, ep)
                dxdt(state, params, precision(t_old), slopes, j, L)
                dxdt(proposed, params, precision(t_old + span), slopes[n_states * L:], j, L)
            else:
                if recomputed:  # the crossing step's interpolant data, again
                    dense_stages_lane(state, params, t_old, span, stages, j)
                end_derivative(proposed, params, precision(t_old + span), stages, j)
            for e in range(n_events):
                thetas[e * L + j] = next_crossing(e, zero, values[e * L + j], state, proposed,
                                                  params, stages, t_old, span, j, es, ep)
            acted = -1
            acted_theta = precision(no_crossing)
            for _ in range(max_crossings):
                first = -1
                first_theta = precision(no_crossing)
                for e in range(n_events):
                    if thetas[e * L + j] < first_theta:
                        first, first_theta = e, thetas[e * L + j]
                if first < 0:
                    break
                if counting:
                    record(first, first_theta, run, state, proposed, stages, t_old, span,
                           event_times, event_states, event_counts, j, es, ep)
                if acting[first]:
                    acted, acted_theta = first, first_theta
                    break
                g_here = g_at(first, first_theta, state, proposed, params, stages, t_old, span,
                              j, es, ep)
                thetas[first * L + j] = next_crossing(first, first_theta, g_here, state,
                                                      proposed, params, stages, t_old, span,
                                                      j, es, ep)
            if acted < 0:
                for e in range(n_events):
                    values[e * L + j] = trial[e * L + j]
            return acted, acted_theta

        scan = jit(scan)

        def reset(which, state, params, t, j):
            reset_of(which, state, params, precision(t), j, L)

        reset = jit(reset)

        def clear(run, event_times, event_states, event_counts):
            """A new run's records: none yet (NaN) and zero counts."""
            for e in range(event_counts.shape[0]):
                event_counts[e, run] = 0
            for r in range(event_times.shape[0]):
                for e in range(event_times.shape[1]):
                    event_times[r, e, run] = nan
                for k in range(event_states.shape[1]):
                    event_states[r, k, run] = nan

        clear = jit(clear)

        return start, trial, check, scan, state_at, reset, clear

    @property
    def interpolant(self) -> str:
        """``"step"`` (the step's continuous extension) or ``"hermite"``."""
        return self.compile_settings.interpolant
