"""A batch's host arrays as one labelled, self-describing ``xarray.Dataset``."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from cubie_kernel.batch_kernel import BatchOutput
from cubie_kernel.integrators.loop import COUNTER_NAMES
from cubie_kernel.outputs import Output
from cubie_kernel.status import status_attrs
from cubie_kernel.systems import ODESystem

#: Names the result Dataset uses itself: a state, observable or parameter
#: may not take them.
RESERVED_NAMES = (
    "status", *COUNTER_NAMES, *(f"{name}_at_save" for name in COUNTER_NAMES), "run", "time",
    "window", "window_start", "window_end", "record",
)


def check_result_names(system: ODESystem) -> None:
    """Raise ValueError if a system name would collide in the result Dataset."""
    from cubie_kernel.inputs import INITIAL_PREFIX

    taken = {}
    for kind, names in (
        ("state", system.state_names),
        ("observable", system.observable_names),
        ("parameter", system.parameter_names),
    ):
        for name in names:
            if name in RESERVED_NAMES:
                raise ValueError(
                    f"{kind} {name!r} of system {system.name!r} clashes with a result "
                    f"variable of the same name; reserved: {', '.join(RESERVED_NAMES)}"
                )
            taken[name] = kind
    for state in system.state_names:
        coord = INITIAL_PREFIX + state
        if coord in taken:
            raise ValueError(
                f"{taken[coord]} {coord!r} of system {system.name!r} clashes with the "
                f"coordinate holding swept initial values of state {state!r}"
            )


_COUNTER_ATTRS = {
    "n_steps": {"long_name": "accepted steps", "units": "1"},
    "n_rejected": {"long_name": "rejected steps", "units": "1"},
}


def batch_dataset(
    system: ODESystem,
    output: BatchOutput,
    coords: Mapping[str, np.ndarray],
    attrs: Mapping,
    declared: Output | None = None,
    events: Sequence = (),
) -> xr.Dataset:
    """Build the result Dataset with one constructor call.

    Dims ``run`` and ``time``; one variable per saved state and observable
    (``x(run, time)``, views of the (time, variable, run) arrays, no copy),
    one per summary result (``x_max(run, window)``, ``x_peaks(run, window,
    peak)``, with CF ``cell_methods``, units and long names; window bounds
    as coordinates ``window_start``/``window_end``), ``x_final(run)`` when
    final states are kept, ``status(run)`` as a CF flag variable, step
    counters per run, swept inputs as coordinates along ``run``, solver
    settings in ``attrs``. ``declared`` is the run's :class:`Output`,
    ``events`` its :class:`~cubie_kernel.systems.events.Event` s
    (:func:`event_variables`).
    """
    declared_events = tuple(events)
    declared = Output() if declared is None else declared
    resolved = declared.resolve(system)
    data_vars = {}
    for column, index in enumerate(resolved.states):
        name = system.state_names[index]
        data_vars[name] = (
            ("run", "time"), output.state[:, column, :].T, describe(system, name, f"state {name}")
        )
    for column, index in enumerate(resolved.observables):
        name = system.observable_names[index]
        data_vars[name] = (
            ("run", "time"),
            output.observables[:, column, :].T,
            describe(system, name, f"observable {name}"),
        )
    data_vars.update(summary_variables(system, resolved, output.summaries))
    if output.final_state.shape[0]:
        for i, name in enumerate(system.state_names):
            info = describe(system, name, f"state {name}")
            info["long_name"] = f"{info['long_name']} at the end of the run"
            data_vars[f"{name}_final"] = (("run",), output.final_state[i], info)
    if output.save_counters.shape[1]:
        for i, name in enumerate(COUNTER_NAMES):
            data_vars[f"{name}_at_save"] = (
                ("run", "time"),
                output.save_counters[:, i, :].T,
                {**_COUNTER_ATTRS[name], "long_name": _COUNTER_ATTRS[name]["long_name"]
                 + " since the start of the run (warm-up included)"},
            )
    data_vars.update(event_variables(system, declared_events, output))
    data_vars["status"] = (("run",), output.status, status_attrs())
    for i, name in enumerate(COUNTER_NAMES):
        data_vars[name] = (("run",), output.counters[i], _COUNTER_ATTRS[name])
    n_runs = output.status.shape[0]
    all_coords = {
        "run": ("run", np.arange(n_runs), {"long_name": "run index"}),
        "time": ("time", output.time, {**describe(system, "t", "time"), "standard_name": "time"}),
    }
    if resolved.summary_slots:
        time_units = describe(system, "t", "time")
        for bound, words in (("start", "start"), ("end", "end")):
            all_coords[f"window_{bound}"] = (
                "window", getattr(output, f"window_{bound}"),
                {**time_units, "long_name": f"{words} of the summary window"},
            )
    if declared_events:
        n_records = output.event_times.shape[0]
        all_coords["record"] = (
            "record", np.arange(n_records), {"long_name": "event record index"}
        )
    for name, values in coords.items():
        all_coords[name] = ("run", values, input_attrs(system, name))
    return xr.Dataset(
        data_vars=data_vars, coords=all_coords, attrs={"Conventions": CONVENTIONS, **attrs}
    )


def event_variables(system: ODESystem, events: Sequence, output: BatchOutput) -> dict:
    """``<event>_time(run, record)``, ``<event>_<state>(run, record)`` and
    ``<event>_count(run)`` for every event (views of the batch's arrays).

    The ``record`` dim is as long as the largest ``max_records``; records
    beyond a run's count (or the event's own ``max_records``) are NaN, and
    the count includes crossings beyond ``max_records``.
    """
    out = {}
    n = system.n_states
    time_info = describe(system, "t", "time")
    for e, event in enumerate(events):
        records = output.event_times[:, e, :].T
        what = f"crossing of event {event.name!r} ({event.condition}"
        what += {1: ", rising)", -1: ", falling)", 0: ")"}[event.direction]
        out[f"{event.name}_time"] = (
            ("run", "record"), records, {**time_info, "long_name": f"time of the {what}"},
        )
        for k, state in enumerate(system.state_names):
            info = describe(system, state, f"state {state}")
            info["long_name"] = f"{info['long_name']} at the {what}"
            values = output.event_states[:, e * n + k, :].T
            out[f"{event.name}_{state}"] = (("run", "record"), values, info)
        out[f"{event.name}_count"] = (
            ("run",), output.event_counts[e],
            {"long_name": f"number of {what}s (recorded or not)", "units": "1"},
        )
    return out


def summary_variables(system: ODESystem, resolved, summaries: np.ndarray) -> dict:
    """``x_<result>(run, window[, dim])`` for every summary slot group.

    ``summaries`` is the (window, slot, run) array; the variables are views.
    """
    out = {}
    time_units = system.units.get("t")
    for group in resolved.summary_slots:
        slot = group.first_slot
        option = group.request.option
        base = describe(system, group.variable, f"{group.kind} {group.variable}")
        units = system.units.get(group.variable)
        for result in group.request.metric.results:
            size = result.size(option)
            values = summaries[:, slot : slot + size, :]
            info = {"long_name": f"{result.long_name} of {base['long_name']}"}
            if result.cell_methods:
                info["cell_methods"] = result.cell_methods
            unit = {
                "same": units,
                "time": time_units,
                "1": "1",
                "per_time": f"({units}) / ({time_units})" if units and time_units else None,
            }[result.units]
            if unit:
                info["units"] = unit
            info["metric"] = group.request.label
            name = f"{group.variable}_{result.suffix}"
            if result.count == "option":
                out[name] = (("run", "window", result.dim), values.transpose(2, 0, 1), info)
            else:
                out[name] = (("run", "window"), values[:, 0, :].T, info)
            slot += size
    return out


#: The CF version results follow (``Conventions`` global attribute).
CONVENTIONS = "CF-1.10"


def describe(system: ODESystem, name: str, default_long_name: str) -> dict[str, str]:
    """CF ``long_name`` and, when declared, ``units`` of a system name (``"t"``: time)."""
    out = {"long_name": system.long_names.get(name, default_long_name)}
    if name in system.units:
        out["units"] = system.units[name]
    return out


def input_attrs(system: ODESystem, label: str) -> dict[str, str]:
    """Attrs of a swept input's coordinate: ``initial_<state>`` or a parameter."""
    from cubie_kernel.inputs import INITIAL_PREFIX

    if label.startswith(INITIAL_PREFIX) and label[len(INITIAL_PREFIX):] in system.state_names:
        state = label[len(INITIAL_PREFIX):]
        out = describe(system, state, state)
        out["long_name"] = f"initial value of {out['long_name']}"
        return out
    return describe(system, label, f"parameter {label}")
