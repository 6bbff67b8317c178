"""A batch's host arrays as one labelled, self-describing ``xarray.Dataset``."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import xarray as xr

from cubie_kernel.batch_kernel import BatchOutput
from cubie_kernel.integrators.loop import COUNTER_NAMES
from cubie_kernel.status import status_attrs
from cubie_kernel.systems import ODESystem

#: Names the result Dataset uses itself: a state, observable or parameter
#: may not take them.
RESERVED_NAMES = (
    "status", *COUNTER_NAMES, *(f"{name}_at_save" for name in COUNTER_NAMES), "run", "time",
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
    save_states: bool = True,
    save_observables: bool = True,
) -> xr.Dataset:
    """Build the result Dataset with one constructor call.

    Dims ``run`` and ``time``; one variable per saved state and observable
    (``x(run, time)``, views of the (time, variable, run) arrays, no copy),
    ``status(run)`` as a CF flag variable, step counters per run, swept
    inputs as coordinates along ``run``, solver settings in ``attrs``.
    """
    data_vars = {}
    if save_states:
        for i, name in enumerate(system.state_names):
            data_vars[name] = (
                ("run", "time"), output.state[:, i, :].T, describe(system, name, f"state {name}")
            )
    if save_observables:
        for i, name in enumerate(system.observable_names):
            data_vars[name] = (
                ("run", "time"),
                output.observables[:, i, :].T,
                describe(system, name, f"observable {name}"),
            )
    if output.save_counters.shape[1]:
        for i, name in enumerate(COUNTER_NAMES):
            data_vars[f"{name}_at_save"] = (
                ("run", "time"),
                output.save_counters[:, i, :].T,
                {**_COUNTER_ATTRS[name], "long_name": _COUNTER_ATTRS[name]["long_name"]
                 + " since the start of the run (warm-up included)"},
            )
    data_vars["status"] = (("run",), output.status, status_attrs())
    for i, name in enumerate(COUNTER_NAMES):
        data_vars[name] = (("run",), output.counters[i], _COUNTER_ATTRS[name])
    n_runs = output.status.shape[0]
    all_coords = {
        "run": ("run", np.arange(n_runs), {"long_name": "run index"}),
        "time": ("time", output.time, {**describe(system, "t", "time"), "standard_name": "time"}),
    }
    for name, values in coords.items():
        all_coords[name] = ("run", values, input_attrs(system, name))
    return xr.Dataset(
        data_vars=data_vars, coords=all_coords, attrs={"Conventions": CONVENTIONS, **attrs}
    )


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
