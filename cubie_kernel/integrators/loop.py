"""The integration loop (``IVPLoop``): one driver for every target.

The loop's device function is a *driver* that advances a block of ``L``
runs (lanes, see :mod:`cubie_kernel.targets`; ``L = 1`` on cuda, one per
SIMD lane on the cpu). Each pass attempts one step on every lane at once
(the step's lane loops vectorise) and then settles each lane on its own:
accept or reject, land on a save time and write the row, end the run, and
hand the lane the block's next run. Everything a run carries between
attempts is in the registered per-run state
(:mod:`cubie_kernel.integrators.run_state`, the controller's ``history``),
so the same device functions serve one run per thread and many runs in
lockstep.

Each run: copy the initial values, integrate an optional warm-up (settling)
interval without saving, then take a sample (time series row and summary
update, :mod:`cubie_kernel.outputs`) at the start and every ``save_every``,
and at the end. With dense output (adaptive methods with an accurate
continuous extension) the steps are not shortened for samples: after each
accepted step every sample time it passed is interpolated from the step's
continuous extension, and only the end of the warm-up and of the run are
landed on, so the steps do not depend on ``save_every``. Otherwise (fixed
steps, or no interpolant) the last step of each interval is clamped to land
exactly on the sample time. Time accumulates in float64 whatever the state
precision.

Time line of one run::

    t0 ---- warm-up ---- t_start = t0 + warmup ---- save every ... ---- t_start + duration

Buffers (registered under the loop, sizes in elements)
------------------------------------------------------
``state``, ``proposed_state``
    ``n_states`` each: the current state and the step's proposal.
``error``
    ``n_states`` for adaptive methods (the step's error estimate), else 0.
``derivative``
    ``n_states`` when the first step is estimated automatically (scratch of
    the estimate, see ``IVPLoop._build_first_step``), else 0.
``parameters``
    ``n_parameters``: the lane's copy of its run's parameters.
``sample_state``
    ``n_states`` with dense output, else 0: the interpolated state at a
    sample time.

The step, the step-size controller and the output functions are registered
children, so their shared and persistent needs roll up into the loop's.

Step control
------------
With a fixed controller every step is ``dt`` except the last of each
interval, clamped to land on the save time. With an adaptive one the step
is attempted, the controller accepts or rejects it and proposes the next
size; a step that would pass the time it must land on is clamped to it,
after an accepted clamped step the unclamped proposal is kept, and a
clamped step never enters the controller's error history. The step accepted
right after a rejection does not grow the next one (Hairer, Norsett &
Wanner I, Sect. II.4; scipy does the same). A run stops with a
status flag when the step falls below ``dt_min`` (or no longer advances
``t``), or after ``max_steps`` attempted steps; it never stops its batch.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.controllers import ControllerSettings
from cubie_kernel.factory import CompiledFactory
from cubie_kernel.integrators import run_state as rs
from cubie_kernel.integrators.events import DEFAULT_MAX_RESETS
from cubie_kernel.status import FAILURE_MASK, RunStatus
from cubie_kernel.systems import ODESystem

#: A fixed step within this relative slack of the remaining time is the
#: interval's last step (absorbs float64 round-off of accumulated time).
LAST_STEP_SLACK = 1e-6

#: Rows of the per-run counters output.
COUNTER_NAMES = ("n_steps", "n_rejected")

#: Default cap on attempted steps per run (accepted + rejected).
DEFAULT_MAX_STEPS = 100_000


@attrs.frozen
class LoopSettings:
    """Compile-time settings of the per-run loop.

    ``dt`` is the fixed step (fixed controller); ``dt0`` the first step of
    an adaptive run (None: estimated per run as scipy does); ``dt_min`` and
    ``max_steps`` end adaptive runs that stall. ``dense``: samples come
    from the step's continuous extension instead of landing steps on them
    (adaptive methods with ``save_every``); ``final_state``: write each
    run's last state to the final-state output; ``events``: the
    :class:`~cubie_kernel.systems.events.Event` s located after each
    accepted step, and ``max_resets`` the resets a run may take.
    """

    system: ODESystem
    dt: float | None = None
    save_every: float | None = None
    dense: bool = False
    final_state: bool = False
    dt0: float | None = None
    dt_min: float = attrs.fields(ControllerSettings).dt_min.default
    max_steps: int = DEFAULT_MAX_STEPS
    events: tuple = ()
    max_resets: int = DEFAULT_MAX_RESETS
    precision: type = np.float64
    target: str = "cpu"


class IVPLoop(CompiledFactory):
    """Factory of the loop's driver device function.

    The device function is ``drive(initial_values, parameters,
    state_output, observable_output, counter_output, summary_output,
    final_output, event_times, event_states, event_counts, counters, status,
    t0, duration, warmup, first_run, run_stride, shared, persistent, clock,
    flags)``: the batch's whole input arrays ``(variable, run)``, output
    arrays ``(sample, variable, run)``, summaries ``(window, slot, run)``,
    final states ``(state, run)``, event records ``(record, event, run)``
    (float64 times) and ``(record, event * state, run)``, event counts
    ``(event, run)``, counters ``(counter, run)`` and status ``(run,)``; float64 times; the runs ``first_run, first_run +
    run_stride, ...`` go through this block's lanes; ``shared`` and
    ``persistent`` are the block's scratch regions and ``clock``/``flags``
    its per-run state (lane form). A target's batch kernel calls it once
    per block (:meth:`cubie_kernel.targets.Target.build_batch_kernel`).
    """

    def __init__(self, settings: LoopSettings, step, controller, output, events,
                 registry) -> None:
        super().__init__(settings)
        self.step = step
        self.controller = controller
        self.output = output
        self.events = events
        self._registry = registry
        self.register_buffers()

    @property
    def registry(self):
        return self._registry

    def dependencies(self):
        if self.compile_settings.events:
            return (self.step, self.controller, self.output, self.events)
        return (self.step, self.controller, self.output)

    @property
    def adaptive(self) -> bool:
        return self.controller.is_adaptive

    @property
    def estimates_first_step(self) -> bool:
        return self.adaptive and self.compile_settings.dt0 is None

    def register_buffers(self) -> None:
        n = self.compile_settings.system.n_states
        self._registry.register("state", self, n)
        self._registry.register("proposed_state", self, n)
        self._registry.register("error", self, n if self.step.tableau.adaptive else 0)
        self._registry.register("derivative", self, n if self.estimates_first_step else 0)
        self._registry.register("parameters", self, self.compile_settings.system.n_parameters)
        self._registry.register("sample_state", self, n if self.compile_settings.dense else 0)
        children = self._registry.children(self)
        if "output" not in children:
            self._registry.register_child(self, self.output, "output")
        if "step" not in children:
            self._registry.register_child(self, self.step, "step")
        if "controller" not in children:
            self._registry.register_child(self, self.controller, "controller")
        if "events" not in children:
            self._registry.register_child(self, self.events, "events")

    def settings_changed(self, changed: set[str]) -> None:
        self.register_buffers()

    def build(self):
        """The lane-form driver (see the module docstring); ``target.build_batch_kernel`` wraps it."""
        s = self.compile_settings
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        lanes = backend.lanes(precision)
        registry = self._registry

        def allocator(name):
            return registry.get_allocator(name, self, s.target, precision)

        alloc_state = allocator("state")
        alloc_proposed = allocator("proposed_state")
        alloc_error = allocator("error")
        alloc_derivative = allocator("derivative")
        alloc_parameters = allocator("parameters")
        alloc_sample = allocator("sample_state")
        step_shared, step_persistent = registry.get_child_allocators(
            self, self.step, "step", s.target, precision
        )
        control_shared, control_persistent = registry.get_child_allocators(
            self, self.controller, "controller", s.target, precision
        )
        output_shared, output_persistent = registry.get_child_allocators(
            self, self.output, "output", s.target, precision
        )
        step = self.step.device_function
        control = self.controller.device_function
        reset_controller = self.controller.reset_function
        take_sample = self.output.device_function
        fail_summaries = self.output.fail_function
        dense = bool(s.dense)
        if dense:
            interpolate = self.step.interpolate_function
            end_derivative = self.step.end_derivative_function
        has_events = bool(s.events)
        step_interpolant = has_events and self.events.interpolant == "step"
        recomputed = has_events and self.events.interpolant == "recomputed"
        if dense or step_interpolant:
            alloc_dense = registry.get_allocator(
                "dense_stages", self.step, s.target, precision
            )
        if has_events:
            event_shared, event_persistent = registry.get_child_allocators(
                self, self.events, "events", s.target, precision
            )
            (event_start, event_trial, event_check, event_scan, event_state_at,
             event_reset, event_clear) = self.events.device_function
            terminal = tuple(bool(e.terminal) for e in s.events)
            alloc_event_dense = registry.get_allocator(
                "event_dense", self.events, s.target, precision
            )
        max_resets = int(s.max_resets)
        first_step = self._build_first_step(backend, precision, lanes)
        jit = backend.device_jit
        n_states = s.system.n_states
        n_parameters = s.system.n_parameters
        adaptive = self.adaptive
        estimate_first_step = self.estimates_first_step
        final_state = bool(s.final_state)
        # Adaptive steps live in the run's precision (so do the controller and
        # the first-step estimate): float32 runs do float64 arithmetic only on
        # time. A fixed step stays float64, so that time advances by exactly dt.
        step_type = precision if adaptive else np.float64
        wide = np.float64  # time is float64: widen a step before adding it to a time
        if adaptive:
            dt = step_type(0.0 if s.dt0 is None else s.dt0)
        else:
            dt = step_type(s.dt)
        last_step_limit = float(dt) * (1.0 + LAST_STEP_SLACK)
        dt_min = step_type(s.dt_min)
        max_steps = int(s.max_steps)
        save_initial = s.save_every is not None
        save_every = float(s.save_every) if save_initial else 0.0
        nonfinite = int(RunStatus.NONFINITE_STATE)
        too_many_resets = int(RunStatus.TOO_MANY_RESETS)
        terminated = int(RunStatus.TERMINATED_BY_EVENT)
        failure_mask = int(FAILURE_MASK)
        too_small = int(RunStatus.STEP_SIZE_TOO_SMALL)
        too_many = int(RunStatus.MAX_STEPS_EXCEEDED)
        nan = precision(np.nan)
        inf = np.inf
        L = lanes
        T, T_END, H, H_TRY = (f * L for f in (rs.T, rs.T_END, rs.H, rs.H_TRY))
        H_NEXT, T_SAMPLE, T_PREV = (f * L for f in (rs.H_NEXT, rs.T_SAMPLE, rs.T_PREV))
        RUN, STATUS, ACCEPTED, REJECTED = (
            f * L for f in (rs.RUN, rs.STATUS, rs.N_ACCEPTED, rs.N_REJECTED)
        )
        FIRST, AFTER_REJECT, SAVE_INDEX, LAST = (
            f * L for f in (rs.FIRST_STAGE, rs.AFTER_REJECT, rs.SAVE_INDEX, rs.LAST)
        )
        ACCEPT, EVENT, STEP_STATUS = rs.ACCEPT * L, rs.EVENT * L, rs.STEP_STATUS * L
        N_RESETS, ACTED, T_EVENT = rs.N_RESETS * L, rs.ACTED * L, rs.T_EVENT * L
        NO_EVENT, LANDED, FAILED, SAMPLED = rs.NO_EVENT, rs.LANDED, rs.FAILED, rs.SAMPLED
        TERMINATED = rs.TERMINATED
        NOT_ACTED, RESET, ENDED, RESET_LIMIT = rs.NOT_ACTED, rs.RESET, rs.ENDED, rs.RESET_LIMIT

        def all_finite(state, j):
            for k in range(n_states):
                if not math.isfinite(state[k * L + j]):
                    return False
            return True

        all_finite = jit(all_finite, inline=True)

        def sample_time(index, n_samples, t_start, duration):
            """Absolute time of sample ``index`` (the last one is the run's end)."""
            if save_initial and index < n_samples - 1:
                return t_start + index * save_every
            return t_start + duration

        sample_time = jit(sample_time, inline=True)

        def write_sample(i, j, source, t, params, flags, state_output, observable_output,
                         counter_output, summary_output, shared, persistent):
            """Sample ``i`` of lane ``j``'s run from the lane-form ``source`` at ``t``."""
            run = flags[RUN + j]
            if counter_output.shape[1] > 0:
                counter_output[i, 0, run] = flags[ACCEPTED + j]
                counter_output[i, 1, run] = flags[REJECTED + j]
            take_sample(i, source, params, t, j, run, state_output, observable_output,
                        summary_output, output_shared(shared, persistent),
                        output_persistent(shared, persistent))

        write_sample = jit(write_sample, inline=True)

        def enter(index, j, state, params, clock, flags, state_output, observable_output,
                  counter_output, summary_output, shared, persistent, t_start, duration):
            """Make sample ``index`` the lane's next; 1 when the run has no samples left.

            Sample 0 of a run that saves its start is taken at once (no step).
            """
            n_samples = state_output.shape[0]
            while index < n_samples:
                if save_initial and index == 0:
                    write_sample(index, j, state, clock[T + j], params, flags, state_output,
                                 observable_output, counter_output, summary_output, shared,
                                 persistent)
                    index += 1
                    continue
                flags[SAVE_INDEX + j] = index
                when = sample_time(index, n_samples, t_start, duration)
                if dense:
                    clock[T_SAMPLE + j] = when
                    clock[T_END + j] = t_start + duration
                else:
                    clock[T_END + j] = when
                return 0
            flags[SAVE_INDEX + j] = index
            return 1

        enter = jit(enter)

        def fail_rows(j, clock, flags, state_output, observable_output, counter_output,
                      summary_output, final_output):
            """A failed run: its remaining rows hold counters and NaN, its unfinished
            windows and its final state NaN."""
            run = flags[RUN + j]
            first = max(np.int64(flags[SAVE_INDEX + j]), 0)
            for i in range(first, state_output.shape[0]):
                if counter_output.shape[1] > 0:
                    counter_output[i, 0, run] = flags[ACCEPTED + j]
                    counter_output[i, 1, run] = flags[REJECTED + j]
                for k in range(state_output.shape[1]):
                    state_output[i, k, run] = nan
                for k in range(observable_output.shape[1]):
                    observable_output[i, k, run] = nan
            fail_summaries(first, run, summary_output, state_output.shape[0])
            for k in range(final_output.shape[0]):
                final_output[k, run] = nan

        fail_rows = jit(fail_rows)

        def begin(run, j, initial_values, parameters, state, params, proposed, error,
                  derivative, clock, flags, control_s, control_p, state_output,
                  observable_output, counter_output, summary_output, event_times,
                  event_states, event_counts, shared, persistent, t0, duration, warmup):
            """Lane ``j`` takes ``run``; 1 when the run is over without a step."""
            flags[RUN + j] = run
            flags[STATUS + j] = 0
            flags[ACCEPTED + j] = 0
            flags[REJECTED + j] = 0
            flags[FIRST + j] = 0
            flags[STEP_STATUS + j] = 0
            flags[AFTER_REJECT + j] = 0
            flags[LAST + j] = 0
            for k in range(n_states):
                state[k * L + j] = initial_values[k, run]
            for k in range(n_parameters):
                params[k * L + j] = parameters[k, run]
            clock[T + j] = t0
            clock[T_PREV + j] = t0
            clock[T_SAMPLE + j] = inf
            flags[N_RESETS + j] = 0
            flags[ACTED + j] = NOT_ACTED
            if has_events:
                event_clear(run, event_times, event_states, event_counts)
                event_start(state, params, t0, j, event_shared(shared, persistent),
                            event_persistent(shared, persistent))
            h = dt
            if adaptive:
                reset_controller(control_s, control_p, j)
                if estimate_first_step:
                    h = first_step(state, params, t0, error, proposed, derivative,
                                   warmup + duration, j)
            clock[H + j] = h
            t_start = t0 + warmup
            if warmup > 0.0:
                flags[SAVE_INDEX + j] = -1
                clock[T_END + j] = t_start
                return 0
            return enter(np.int64(0), j, state, params, clock, flags, state_output,
                         observable_output, counter_output, summary_output, shared, persistent,
                         t_start, duration)

        begin = jit(begin)

        def finish(j, state, flags, counters, status, final_output):
            run = flags[RUN + j]
            counters[0, run] = flags[ACCEPTED + j]
            counters[1, run] = flags[REJECTED + j]
            status[run] = flags[STATUS + j]
            if final_state and (flags[STATUS + j] & failure_mask) == 0:
                for k in range(n_states):
                    final_output[k, run] = state[k * L + j]
            flags[RUN + j] = -1

        finish = jit(finish)

        def fill(j, next_run, run_stride, initial_values, parameters, state, params,
                 proposed, error, derivative, clock, flags, control_s, control_p,
                 state_output, observable_output, counter_output, summary_output, final_output,
                 event_times, event_states, event_counts, counters, status, shared,
                 persistent, t0, duration, warmup):
            """Lane ``j`` (empty) takes the next run that needs a step; returns the
            next run left. Runs that end without a step are finished on the way;
            with no run left the lane stays empty (``flags[RUN + j] == -1``)."""
            while next_run < status.shape[0]:
                run = next_run
                next_run += run_stride
                if begin(run, j, initial_values, parameters, state, params, proposed, error,
                         derivative, clock, flags, control_s, control_p, state_output,
                         observable_output, counter_output, summary_output, event_times,
                         event_states, event_counts, shared, persistent, t0, duration,
                         warmup) == 0:
                    break
                finish(j, state, flags, counters, status, final_output)
            return next_run

        fill = jit(fill)

        # prepare and settle work on every lane at once and are written
        # without branches that depend on a lane (conditional expressions
        # become selects), so that they vectorise across the block like the
        # step does; lanes with an event are then handled one by one.
        def prepare_lane(clock, flags, j):
            """Lane ``j``'s next step to attempt: clamped to where it must land."""
            active = flags[RUN + j] >= 0
            remaining = clock[T_END + j] - clock[T + j]
            h = step_type(clock[H + j])
            if adaptive:
                last = h >= remaining
            else:
                last = remaining <= last_step_limit
            h_try = step_type(remaining) if last else h
            flags[LAST + j] = 1 if last else 0
            clock[H_TRY + j] = h_try if active else 0.0

        prepare_lane = jit(prepare_lane, inline=True)

        def prepare(clock, flags):
            for j in range(L):
                prepare_lane(clock, flags, j)

        prepare = jit(prepare, inline=True)

        def settle(state, proposed, clock, flags):
            """Every lane's verdict: take accepted steps, advance time, flag events,
            and prepare each lane's next attempt (one pass over the lanes).

            ``flags[EVENT + j]`` becomes LANDED when the lane reached the time
            it had to land on, SAMPLED when an accepted step passed the next
            sample time (dense output), FAILED when its run must stop, else
            NO_EVENT. Returns the number of lanes with an event (the caller
            handles them and prepares their next attempt again).
            """
            for k in range(n_states):  # accepted lanes take their proposals
                for j in range(L):
                    take = flags[RUN + j] >= 0
                    if adaptive:
                        take = take & (flags[ACCEPT + j] != 0)
                    if take:
                        state[k * L + j] = proposed[k * L + j]
            events = 0
            for j in range(L):
                active = flags[RUN + j] >= 0
                h_try = step_type(clock[H_TRY + j])
                h = step_type(clock[H + j])
                if adaptive:
                    accept = flags[ACCEPT + j] != 0
                    h_next = step_type(clock[H_NEXT + j])
                else:
                    accept = True
                    h_next = h
                # no growth right after a rejection
                h_next = h_try if (accept & (flags[AFTER_REJECT + j] != 0) & (h_next > h_try)) else h_next
                landed = active & accept & (flags[LAST + j] != 0)
                t_old = clock[T + j]
                t_new = t_old + wide(h_try) if accept else t_old  # widened: NumPy 2 adds in float32
                t_new = clock[T_END + j] if landed else t_new
                h_new = max(h, h_next) if landed else h_next  # landed: keep the unclamped proposal
                clock[T + j] = t_new if active else t_old
                if dense:
                    clock[T_PREV + j] = t_old if (active & accept) else clock[T_PREV + j]
                clock[H + j] = h_new if active else clock[H + j]
                flags[ACCEPTED + j] += 1 if (active & accept) else 0
                flags[REJECTED + j] += 1 if (active & (not accept)) else 0
                flags[AFTER_REJECT + j] = 0 if accept else 1
                flags[FIRST + j] = 1 if accept else 2
                event = LANDED if landed else NO_EVENT
                if dense:
                    passed = active & accept & (t_new >= clock[T_SAMPLE + j])
                    event = SAMPLED if (passed & (not landed)) else event
                if adaptive:
                    going = active & (not landed)
                    small = going & ((h_new < dt_min) | (t_new + wide(h_new) == t_new))
                    many = going & (not small) & (
                        flags[ACCEPTED + j] + flags[REJECTED + j] >= max_steps
                    )
                    flags[STATUS + j] |= (too_small if small else 0) | (too_many if many else 0)
                    # a run stopped by failed attempts says why they failed
                    flags[STATUS + j] |= flags[STEP_STATUS + j] if (small | many) else 0
                    event = FAILED if (small | many) else event
                flags[EVENT + j] = event
                events += 1 if event != NO_EVENT else 0
                prepare_lane(clock, flags, j)
            return events

        settle = jit(settle, inline=True)

        def take_until(j, y_end, t_prev, t_new, t_limit, inclusive, params, clock, flags,
                       state_output, observable_output, counter_output, summary_output,
                       shared, persistent, t_start, duration):
            """Samples an accepted step from ``t_prev`` to ``t_new`` (ending at
            ``y_end``) passed, up to ``t_limit`` (included when ``inclusive``;
            dense output): from its continuous extension, or ``y_end`` itself
            at the step's end."""
            n_samples = state_output.shape[0]
            index = np.int64(flags[SAVE_INDEX + j])
            if index < 0 or clock[T_SAMPLE + j] > t_limit:
                return
            sample = alloc_sample(shared, persistent)
            stages = alloc_dense(step_shared(shared, persistent), step_persistent(shared, persistent))
            span = t_new - t_prev
            if clock[T_SAMPLE + j] < t_new:
                end_derivative(y_end, params, t_new, stages, j)
            while index < n_samples and (clock[T_SAMPLE + j] < t_limit or (
                    inclusive and clock[T_SAMPLE + j] == t_limit)):
                when = clock[T_SAMPLE + j]
                if when == t_new:
                    write_sample(index, j, y_end, when, params, flags, state_output,
                                 observable_output, counter_output, summary_output, shared,
                                 persistent)
                else:
                    interpolate(stages, precision(span), precision((when - t_prev) / span),
                                sample, j)
                    write_sample(index, j, sample, when, params, flags, state_output,
                                 observable_output, counter_output, summary_output, shared,
                                 persistent)
                index += 1
                flags[SAVE_INDEX + j] = index
                clock[T_SAMPLE + j] = (
                    sample_time(index, n_samples, t_start, duration) if index < n_samples
                    else inf
                )

        take_until = jit(take_until)

        def take_passed(j, state, params, clock, flags, state_output, observable_output,
                        counter_output, summary_output, shared, persistent, t_start, duration):
            """Samples the last accepted step passed (dense output)."""
            take_until(j, state, clock[T_PREV + j], clock[T + j], clock[T + j], True, params,
                       clock, flags, state_output, observable_output, counter_output,
                       summary_output, shared, persistent, t_start, duration)

        take_passed = jit(take_passed, inline=True)

        def cross(j, state, proposed, params, clock, flags, state_output, observable_output,
                  counter_output, summary_output, event_times, event_states, event_counts,
                  shared, persistent, t_start, duration):
            """Some event may have crossed in lane ``j``'s accepted step (before ``settle``).

            Locates and records the crossings in time order; when one acts (the first
            terminal or resetting one), takes the samples before it (dense
            output), cuts the step there (``proposed`` becomes the state at the
            crossing, reset) and flags the lane (``acted``). Returns 1 when it
            acted.
            """
            es = event_shared(shared, persistent)
            ep = event_persistent(shared, persistent)
            if step_interpolant:
                stages = alloc_dense(step_shared(shared, persistent),
                                     step_persistent(shared, persistent))
            elif recomputed:
                stages = alloc_event_dense(es, ep)
            else:
                stages = state  # unused by the Hermite interpolant
            t_old = clock[T + j]
            span = wide(step_type(clock[H_TRY + j]))
            counting = flags[SAVE_INDEX + j] >= 0  # not during the warm-up
            first, theta = event_scan(flags[RUN + j], counting, state, proposed, params, stages,
                                      t_old, span, event_times, event_states, event_counts, j,
                                      es, ep)
            if first < 0:
                return 0
            t_event = t_old + theta * span
            if dense:
                take_until(j, proposed, t_old, t_old + span, t_event, False, params, clock,
                           flags, state_output, observable_output, counter_output,
                           summary_output, shared, persistent, t_start, duration)
            event_state_at(theta, state, proposed, stages, span, proposed, j, es, ep)
            if terminal[first]:
                flags[ACTED + j] = ENDED
            elif flags[N_RESETS + j] >= max_resets:
                flags[ACTED + j] = RESET_LIMIT
            else:
                event_reset(first, proposed, params, t_event, j)
                flags[N_RESETS + j] += 1
                flags[ACTED + j] = RESET
            event_start(proposed, params, t_event, j, es, ep)
            clock[H_TRY + j] = t_event - t_old
            clock[T_EVENT + j] = t_event
            if theta < 1.0:
                flags[LAST + j] = 0
            return 1

        cross = jit(cross)

        def detect(state, proposed, params, clock, flags, state_output, observable_output,
                   counter_output, summary_output, event_times, event_states, event_counts,
                   shared, persistent, t_start, duration):
            """Check every lane's accepted step for crossings; returns the lanes an
            event acted on."""
            es = event_shared(shared, persistent)
            ep = event_persistent(shared, persistent)
            for j in range(L):  # every lane at once (vectorises); only the taken ones count
                event_trial(proposed, params, clock[T + j] + wide(step_type(clock[H_TRY + j])),
                            j, es, ep)
            acted = 0
            for j in range(L):
                if flags[RUN + j] < 0:
                    continue
                if adaptive and flags[ACCEPT + j] == 0:
                    continue
                if event_check(j, es, ep) == 0:
                    continue
                acted += cross(j, state, proposed, params, clock, flags, state_output,
                               observable_output, counter_output, summary_output, event_times,
                               event_states, event_counts, shared, persistent, t_start,
                               duration)
            return acted

        detect = jit(detect)

        def after_event(j, clock, flags, control_s, control_p):
            """Lane ``j``'s settled step was cut by an event: the run's time is the
            event's, the next step starts afresh (no first-same-as-last stage, a
            fresh controller history), and the lane's event is what the cut
            step calls for."""
            acted = flags[ACTED + j]
            flags[ACTED + j] = NOT_ACTED
            if flags[EVENT + j] == FAILED:
                return
            t_event = clock[T_EVENT + j]
            clock[T + j] = t_event
            flags[FIRST + j] = 0
            if adaptive:
                reset_controller(control_s, control_p, j)
            if acted == RESET_LIMIT:
                flags[STATUS + j] |= too_many_resets
                flags[EVENT + j] = FAILED
            elif acted == ENDED:
                flags[STATUS + j] |= terminated
                flags[EVENT + j] = TERMINATED
            elif flags[EVENT + j] != LANDED:
                due = dense and clock[T_SAMPLE + j] <= t_event
                flags[EVENT + j] = SAMPLED if due else NO_EVENT
            prepare_lane(clock, flags, j)

        after_event = jit(after_event)

        def handle_event(j, state, params, clock, flags, state_output, observable_output,
                         counter_output, summary_output, final_output, shared, persistent,
                         t_start, duration):
            """Lane ``j`` landed, sampled or failed: take samples; 1 when its run is over."""
            event = flags[EVENT + j]
            if event != FAILED:
                if not all_finite(state, j):
                    flags[STATUS + j] |= nonfinite
                if (flags[STATUS + j] & failure_mask) == 0:
                    if event == TERMINATED:  # the sample at the event's time, if due
                        if dense:
                            take_passed(j, state, params, clock, flags, state_output,
                                        observable_output, counter_output, summary_output,
                                        shared, persistent, t_start, duration)
                        else:
                            index = np.int64(flags[SAVE_INDEX + j])
                            if index >= 0 and clock[T_END + j] == clock[T + j]:
                                write_sample(index, j, state, clock[T + j], params, flags,
                                             state_output, observable_output,
                                             counter_output, summary_output, shared,
                                             persistent)
                                flags[SAVE_INDEX + j] = index + 1
                        fail_rows(j, clock, flags, state_output, observable_output,
                                  counter_output, summary_output, final_output)
                        return 1
                    if dense:
                        take_passed(j, state, params, clock, flags, state_output,
                                    observable_output, counter_output, summary_output, shared,
                                    persistent, t_start, duration)
                        if event == SAMPLED:
                            return 0
                        index = np.int64(flags[SAVE_INDEX + j])
                        if index >= 0:  # landed on the run's end: every sample taken
                            return 1
                        return enter(np.int64(0), j, state, params, clock, flags,
                                     state_output, observable_output, counter_output,
                                     summary_output, shared, persistent, t_start, duration)
                    index = np.int64(flags[SAVE_INDEX + j])  # one signature per helper
                    if index >= 0:
                        write_sample(index, j, state, clock[T + j], params, flags,
                                     state_output, observable_output, counter_output,
                                     summary_output, shared, persistent)
                    return enter(index + 1, j, state, params, clock, flags, state_output,
                                 observable_output, counter_output, summary_output, shared,
                                 persistent, t_start, duration)
            fail_rows(j, clock, flags, state_output, observable_output, counter_output,
                      summary_output, final_output)
            return 1

        handle_event = jit(handle_event)

        def drive(initial_values, parameters, state_output, observable_output, counter_output,
                  summary_output, final_output, event_times, event_states, event_counts,
                  counters, status, t0, duration, warmup, first_run, run_stride, shared,
                  persistent, clock, flags):
            state = alloc_state(shared, persistent)
            proposed = alloc_proposed(shared, persistent)
            error = alloc_error(shared, persistent)
            derivative = alloc_derivative(shared, persistent)
            params = alloc_parameters(shared, persistent)
            step_s = step_shared(shared, persistent)
            step_p = step_persistent(shared, persistent)
            control_s = control_shared(shared, persistent)
            control_p = control_persistent(shared, persistent)
            t_start = t0 + warmup
            next_run = np.int64(first_run)  # a thread index may be unsigned or
            run_stride = np.int64(run_stride)  # 32-bit: unsigned + signed is float
            active = 0
            for j in range(L):
                flags[RUN + j] = -1
                flags[FIRST + j] = 0
                flags[STEP_STATUS + j] = 0
                flags[ACTED + j] = NOT_ACTED
                clock[T + j] = t0
                clock[H_TRY + j] = 0.0
            for j in range(L):
                next_run = fill(j, next_run, run_stride, initial_values, parameters, state,
                                params, proposed, error, derivative, clock, flags, control_s,
                                control_p, state_output, observable_output, counter_output,
                                summary_output, final_output, event_times, event_states,
                                event_counts, counters, status, shared, persistent, t0,
                                duration, warmup)
                active += 1 if flags[RUN + j] >= 0 else 0
            prepare(clock, flags)
            while active > 0:
                step(state, proposed, error, params, clock[T : T + L], clock[H_TRY : H_TRY + L],
                     flags[FIRST : FIRST + L], flags[STEP_STATUS : STEP_STATUS + L], step_s,
                     step_p)
                if adaptive:
                    control(clock[H_TRY : H_TRY + L], flags[LAST : LAST + L], state, proposed,
                            error, flags[ACCEPT : ACCEPT + L], clock[H_NEXT : H_NEXT + L],
                            control_s, control_p)
                acted = 0
                if has_events:
                    acted = detect(state, proposed, params, clock, flags, state_output,
                                   observable_output, counter_output, summary_output,
                                   event_times, event_states, event_counts, shared, persistent,
                                   t_start, duration)
                events = settle(state, proposed, clock, flags)
                if has_events and acted > 0:
                    events = 0
                    for j in range(L):
                        if flags[ACTED + j] != NOT_ACTED:
                            after_event(j, clock, flags, control_s, control_p)
                        events += 1 if flags[EVENT + j] != NO_EVENT else 0
                if events == 0:
                    continue
                for j in range(L):
                    if flags[EVENT + j] == NO_EVENT:
                        continue
                    if handle_event(j, state, params, clock, flags, state_output,
                                    observable_output, counter_output, summary_output,
                                    final_output, shared, persistent, t_start, duration) == 0:
                        prepare_lane(clock, flags, j)
                        continue
                    finish(j, state, flags, counters, status, final_output)
                    next_run = fill(j, next_run, run_stride, initial_values, parameters,
                                    state, params, proposed, error, derivative, clock, flags,
                                    control_s, control_p, state_output, observable_output,
                                    counter_output, summary_output, final_output, event_times,
                                    event_states, event_counts, counters, status, shared,
                                    persistent, t0, duration, warmup)
                    active += 0 if flags[RUN + j] >= 0 else -1
                    prepare_lane(clock, flags, j)  # the new run's first attempt, or none

        return jit(drive)

    def _build_first_step(self, backend, precision, lanes):
        """Device function estimating a run's first step (scipy's rule).

        Hairer, Norsett & Wanner, Solving ODEs I, Sect. II.4 (as in scipy's
        ``select_initial_step``): with ``scale = atol + rtol |y0|``,
        ``d0 = ||y0||``, ``d1 = ||f0||``, ``h0 = 0.01 d0 / d1`` (1e-6 when
        either is tiny); one Euler step gives ``d2 = ||f1 - f0|| / h0``, and
        ``h1 = (0.01 / max(d1, d2)) ** (1 / (q + 1))`` with ``q`` the
        embedded order; the estimate is ``min(100 h0, h1, span)``.
        """
        s = self.compile_settings
        dxdt = backend.device_jit(s.system.lane_functions(precision)["dxdt_lane"])
        L = lanes
        controls = self.controller.compile_settings
        atol = tuple(precision(a) for a in controls.atol)
        rtol = tuple(precision(r) for r in controls.rtol)
        order = self.step.tableau.error_order or 1
        exponent = precision(1.0 / (order + 1))
        n_states = s.system.n_states
        inv_n = precision(1.0 / n_states)
        zero, tiny, flat = precision(0.0), precision(1e-5), precision(1e-15)
        fallback, shrink = precision(1e-6), precision(1e-3)
        one_percent, hundred = precision(0.01), precision(100.0)
        wide = np.float64

        def first_step(state, parameters, t, f0, y1, f1, span, j):
            dxdt(state, parameters, precision(t), f0, j, L)
            d0 = zero
            d1 = zero
            for i in range(n_states):
                scale = atol[i] + rtol[i] * abs(state[i * L + j])
                x = state[i * L + j] / scale
                f = f0[i * L + j] / scale
                d0 += x * x
                d1 += f * f
            d0 = precision(math.sqrt(d0 * inv_n))
            d1 = precision(math.sqrt(d1 * inv_n))
            if d0 < tiny or d1 < tiny:
                h0 = fallback
            else:
                h0 = one_percent * d0 / d1
            h0 = min(h0, precision(span))
            for i in range(n_states):
                y1[i * L + j] = state[i * L + j] + h0 * f0[i * L + j]
            dxdt(y1, parameters, precision(t + wide(h0)), f1, j, L)
            d2 = zero
            for i in range(n_states):
                scale = atol[i] + rtol[i] * abs(state[i * L + j])
                g = (f1[i * L + j] - f0[i * L + j]) / scale
                d2 += g * g
            d2 = precision(math.sqrt(d2 * inv_n)) / h0
            if d1 <= flat and d2 <= flat:
                h1 = max(fallback, h0 * shrink)
            else:
                h1 = (one_percent / max(d1, d2)) ** exponent
            return min(hundred * h0, h1, precision(span))

        return backend.device_jit(first_step)
