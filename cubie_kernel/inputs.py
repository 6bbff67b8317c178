"""Turning user inputs (dicts of name -> scalar or 1-D array) into a batch.

``combinatorial``: the Cartesian product of every given entry, initial
values first then parameters, in the order given, the LAST name varying
fastest. ``verbatim``: the entries are paired columns of equal length
(scalars and length-1 arrays broadcast). Names not given take the system's
defaults. Everything is validated before anything is compiled.
"""

from __future__ import annotations

import math
from typing import Mapping

import attrs
import numpy as np

from cubie_kernel.systems import ODESystem

GRID_KINDS = ("combinatorial", "verbatim")

#: Prefix of the coordinate holding a swept initial value (the bare state
#: name is taken by the state's data variable).
INITIAL_PREFIX = "initial_"


@attrs.frozen
class BatchInputs:
    """A validated batch: (variable, run) float64 arrays plus its coordinates."""

    initial_values: np.ndarray
    parameters: np.ndarray
    coords: dict  # coordinate name -> 1-D float64 array along run

    @property
    def n_runs(self) -> int:
        return self.initial_values.shape[1]


def check_finite_number(value, name: str) -> float:
    """A finite real scalar, else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _as_column(value, field: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a number or a 1-D array of numbers, got {value!r}") from None
    if array.ndim > 1:
        raise ValueError(f"{field} must be a scalar or 1-D, got an array of shape {array.shape}")
    array = np.atleast_1d(array)
    if array.size == 0:
        raise ValueError(f"{field} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{field} contains non-finite values (NaN or inf)")
    return array


def _columns(given: Mapping | None, allowed: tuple[str, ...], what: str, arg: str) -> dict:
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TypeError(f"{arg} must be a dict of name -> value, got {type(given).__name__}")
    unknown = [name for name in given if name not in allowed]
    if unknown:
        raise ValueError(
            f"{arg}: unknown {what} name(s) {unknown}; the system's {what}s are "
            f"{', '.join(allowed) or '(none)'}"
        )
    return {name: _as_column(value, f"{arg}[{name!r}]") for name, value in given.items()}


def build_batch(
    system: ODESystem,
    initial_values: Mapping | None = None,
    parameters: Mapping | None = None,
    grid: str = "combinatorial",
) -> BatchInputs:
    """Validate user inputs and expand them into one batch.

    Raises
    ------
    ValueError
        Unknown names, non-1-D, empty, ragged (verbatim) or non-finite
        values, or an unknown ``grid``; the message names the field.
    """
    if grid not in GRID_KINDS:
        raise ValueError(f"grid must be one of {', '.join(map(repr, GRID_KINDS))}, got {grid!r}")
    states = _columns(initial_values, system.state_names, "state", "initial_values")
    params = _columns(parameters, system.parameter_names, "parameter", "parameters")
    columns = {("state", k): v for k, v in states.items()}
    columns.update({("parameter", k): v for k, v in params.items()})

    if grid == "combinatorial":
        shape = tuple(v.size for v in columns.values())
        n_runs = int(np.prod(shape, dtype=np.int64)) if shape else 1
        indices = np.unravel_index(np.arange(n_runs), shape) if shape else ()
        expanded = {key: values[index] for (key, values), index in zip(columns.items(), indices)}
    else:
        lengths = {key: v.size for key, v in columns.items() if v.size > 1}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{kind} {name!r}: {n}" for (kind, name), n in lengths.items())
            raise ValueError(f"verbatim inputs must have equal lengths, got {described}")
        n_runs = next(iter(lengths.values()), 1)
        expanded = {key: np.broadcast_to(v, (n_runs,)) for key, v in columns.items()}

    init = np.empty((system.n_states, n_runs))
    for i, (name, default) in enumerate(system.initial_values.items()):
        init[i] = expanded.get(("state", name), default)
    par = np.empty((system.n_parameters, n_runs))
    for i, (name, default) in enumerate(system.default_parameters.items()):
        par[i] = expanded.get(("parameter", name), default)
    coords = {
        (INITIAL_PREFIX + name if kind == "state" else name): np.array(values, dtype=np.float64)
        for (kind, name), values in expanded.items()
    }
    return BatchInputs(init, par, coords)
