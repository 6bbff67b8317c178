"""Which sweep inputs are initial values, which are parameters, and the rest.

A sweep name that is one of the system's states sweeps that state's
initial value; a parameter name sweeps that parameter. Every input the
sweep does not vary takes the value given in ``initial_values`` /
``parameters`` (finite scalars), else the system's default. All of it is
checked on the client (:func:`resolve_inputs`), before anything is
submitted; a chunk task then only slices its rows (:func:`chunk_inputs`).

Swept initial values are labelled ``initial_<state>`` in results (the bare
state name is the state's data variable), as in :mod:`cubie_kernel.inputs`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from cubie_kernel.inputs import INITIAL_PREFIX
from cubie_kernel.systems import ODESystem

from cubie_dist.sweep import Sweep


@attrs.frozen
class RunInputs:
    """How a sweep's names and the fixed values map onto a system.

    Attributes
    ----------
    swept_states, swept_parameters
        Sweep names that are states / parameters, in sweep order.
    fixed_initial_values, fixed_parameters
        Explicit values (floats) of inputs the sweep does not vary; inputs
        absent from both take the system's defaults.
    """

    swept_states: tuple[str, ...]
    swept_parameters: tuple[str, ...]
    fixed_initial_values: dict[str, float]
    fixed_parameters: dict[str, float]


def coordinate_name(system: ODESystem, name: str) -> str:
    """Result label of sweep input ``name``: ``initial_<name>`` for a state."""
    return INITIAL_PREFIX + name if name in system.state_names else name


def _fixed(given: Any, allowed: tuple[str, ...], swept: set[str], arg: str, what: str) -> dict:
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TypeError(f"{arg} must be a dict of name -> number, got {type(given).__name__}")
    values = {}
    for name, value in given.items():
        field = f"{arg}[{name!r}]"
        if name not in allowed:
            raise ValueError(
                f"{arg}: unknown {what} name {name!r}; the system's {what}s are "
                f"{list(allowed)}"
            )
        if name in swept:
            raise ValueError(
                f"{field} is also a sweep input; give each input either in the sweep "
                f"or in {arg}, not both"
            )
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"{field} must be a real number, got {value!r}; to vary an input "
                "across runs, put it in the Sweep"
            )
        if not math.isfinite(float(value)):
            raise ValueError(f"{field} must be finite, got {value!r}")
        values[name] = float(value) + 0.0
    return values


def resolve_inputs(
    system: ODESystem,
    sweep: Sweep,
    initial_values: Mapping[str, float] | None = None,
    parameters: Mapping[str, float] | None = None,
) -> RunInputs:
    """Check a sweep and fixed values against ``system``; split them.

    Raises
    ------
    ValueError
        A sweep name that is neither a state nor a parameter (the message
        lists the allowed names), a fixed name unknown to the system or also
        swept, or a fixed value that is not a finite real scalar.
    TypeError
        ``sweep`` is not a Sweep, or a fixed mapping is not a mapping.
    """
    if not isinstance(sweep, Sweep):
        raise TypeError(f"sweep must be a cubie_dist.Sweep, got {type(sweep).__name__}")
    sweep.check_names(
        system.state_names + system.parameter_names,
        f"the states and parameters of system {system.name!r}",
    )
    swept = set(sweep.names)
    return RunInputs(
        swept_states=tuple(n for n in sweep.names if n in system.state_names),
        swept_parameters=tuple(n for n in sweep.names if n in system.parameter_names),
        fixed_initial_values=_fixed(
            initial_values, system.state_names, swept, "initial_values", "state"
        ),
        fixed_parameters=_fixed(
            parameters, system.parameter_names, swept, "parameters", "parameter"
        ),
    )


def chunk_inputs(
    sweep: Sweep, inputs: RunInputs, start: int, stop: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(initial_values, parameters)`` of runs ``[start, stop)`` for ``Solver.solve``.

    Swept inputs are the chunk's columns from ``sweep.inputs(start, stop)``;
    fixed values are scalars, which ``grid="verbatim"`` broadcasts.
    """
    columns = sweep.inputs(start, stop)
    initial = {**inputs.fixed_initial_values, **{n: columns[n] for n in inputs.swept_states}}
    params = {**inputs.fixed_parameters, **{n: columns[n] for n in inputs.swept_parameters}}
    return initial, params


def fixed_input_attrs(system: ODESystem, inputs: RunInputs) -> dict[str, float]:
    """Effective value of every input the sweep does not vary, for ``attrs``.

    ``initial_<state>`` and ``parameter_<name>``: the explicit value, else
    the system's default.
    """
    swept = set(inputs.swept_states) | set(inputs.swept_parameters)
    out = {}
    for name, default in system.initial_values.items():
        if name not in swept:
            out[INITIAL_PREFIX + name] = inputs.fixed_initial_values.get(name, default)
    for name, default in system.default_parameters.items():
        if name not in swept:
            out[f"parameter_{name}"] = inputs.fixed_parameters.get(name, default)
    return out
