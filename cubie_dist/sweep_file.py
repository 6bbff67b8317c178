"""Sweep files: one YAML document describing a whole sweep job.

::

    system:                      # a built-in example ...
      example: lorenz            #   cubie_kernel.systems.<example>(**arguments)
      arguments: {}
    # system:                    # ... or a full definition
    #   equations: ["dy = -k*y"]
    #   states: {y: 1.0}
    #   parameters: {k: 1.0}
    #   constants: {}
    #   observables: []
    #   name: decay
    #   jacobian: {y: {y: "-k"}}   # optional: d(dy/dt)/dy; omitted: generated from equations
    solver: {method: rk45, rtol: 1.0e-6, atol: 1.0e-9, save_every: null}
    # solver:                    # declared outputs: cubie_kernel.Output's fields
    #   method: rk45
    #   output: {states: [], observables: [], save_every: 0.01,
    #            summaries: [mean, max, "peaks[4]"], summarise_every: 10.0}
    sweep:                       # cubie_dist.Sweep.from_dict; any list of numbers may be
      kind: grid                 # written {linspace: [start, stop, num]},
      axes:                      # {logspace: [start, stop, num]} or {arange: [start, stop, step]}
        rho: {linspace: [0, 50, 1000]}
        sigma: [8, 10, 12]
    initial_values: {x: 1.0}     # inputs the sweep does not vary (optional)
    parameters: {}               # (optional)
    duration: 10.0
    t0: 0.0                      # (optional)
    warmup: 0.0                  # (optional)
    output: lorenz_grid.zarr     # default output path (optional; .zarr or .nc)

Every error names the offending key by its path (``sweep.axes.rho``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import attrs
import numpy as np
import yaml

from cubie_dist.inputs import resolve_inputs
from cubie_dist.planner import check_duration
from cubie_dist.spec import SolverSpec
from cubie_dist.sweep import Sweep
from cubie_kernel import ODESystem, systems

TOP_LEVEL_KEYS = (
    "system", "solver", "sweep", "initial_values", "parameters", "duration", "t0", "warmup",
    "output",
)
REQUIRED_KEYS = ("system", "sweep", "duration")
EXAMPLES = ("lorenz", "van_der_pol", "exponential_decay", "harmonic_oscillator", "kepler",
            "robertson")
RANGE_FORMS = {
    "linspace": lambda start, stop, num: np.linspace(start, stop, int(num)),
    "logspace": lambda start, stop, num: np.logspace(start, stop, int(num)),
    "arange": lambda start, stop, step: np.arange(start, stop, step),
}
OUTPUT_SUFFIXES = (".zarr", ".nc")


class SweepFileError(ValueError):
    """A sweep file that cannot be used; the message names the key path."""


@attrs.frozen
class SweepJob:
    """Everything a sweep file asks for, validated."""

    spec: SolverSpec
    sweep: Sweep
    duration: float
    t0: float = 0.0
    warmup: float = 0.0
    initial_values: dict = attrs.Factory(dict)
    parameters: dict = attrs.Factory(dict)
    output: str | None = None

    def run_kwargs(self) -> dict:
        """Keyword arguments of :func:`cubie_dist.run_sweep` (besides spec, sweep)."""
        return {
            "duration": self.duration,
            "initial_values": self.initial_values or None,
            "parameters": self.parameters or None,
            "t0": self.t0,
            "warmup": self.warmup,
        }


def _mapping(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise SweepFileError(f"{path}: expected a mapping, got {type(value).__name__}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SweepFileError(f"{path}: expected a number, got {value!r}")
    return float(value)


def expand_values(value: Any, path: str) -> Any:
    """Turn ``{linspace|logspace|arange: [a, b, c]}`` into a list of floats."""
    if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in RANGE_FORMS:
        form, args = next(iter(value.items()))
        if not isinstance(args, (list, tuple)) or len(args) != 3:
            raise SweepFileError(f"{path}.{form}: expected [start, stop, num_or_step], got {args!r}")
        numbers = [_number(a, f"{path}.{form}[{i}]") for i, a in enumerate(args)]
        return RANGE_FORMS[form](*numbers).tolist()
    return value


def _system(section: Any) -> ODESystem:
    section = _mapping(section, "system")
    if "example" in section:
        unknown = sorted(set(section) - {"example", "arguments"})
        if unknown:
            raise SweepFileError(
                f"system: unknown key(s) {unknown} next to 'example'; allowed: example, arguments"
            )
        name = section["example"]
        if name not in EXAMPLES:
            raise SweepFileError(
                f"system.example: unknown example {name!r}; choose one of {', '.join(EXAMPLES)}"
            )
        arguments = _mapping(section.get("arguments") or {}, "system.arguments")
        try:
            return getattr(systems, name)(**arguments)
        except TypeError as error:
            raise SweepFileError(f"system.arguments: {error}") from None
    allowed = ("equations", "states", "parameters", "constants", "observables", "name", "units",
               "long_names", "jacobian")
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise SweepFileError(
            f"system: unknown key(s) {unknown}; give 'example' (one of {', '.join(EXAMPLES)}) "
            f"or a definition with keys {', '.join(allowed)}"
        )
    try:
        return ODESystem(**section)
    except (TypeError, ValueError) as error:
        raise SweepFileError(f"system: {error}") from None


def _sweep(section: Any) -> Sweep:
    section = dict(_mapping(section, "sweep"))
    for key in ("axes", "columns"):
        if key in section:
            columns = _mapping(section[key], f"sweep.{key}")
            section[key] = {
                name: expand_values(values, f"sweep.{key}.{name}")
                for name, values in columns.items()
            }
    try:
        return Sweep.from_dict(section)
    except (TypeError, ValueError) as error:
        raise SweepFileError(f"sweep: {error}") from None


def _inputs(document: Mapping, key: str) -> dict:
    values = _mapping(document.get(key) or {}, key)
    return {name: _number(value, f"{key}.{name}") for name, value in values.items()}


def check_output_path(path: str | os.PathLike) -> str:
    """The path as a string if its suffix is ``.zarr`` or ``.nc``."""
    path = str(path)
    if Path(path).suffix not in OUTPUT_SUFFIXES:
        raise SweepFileError(
            f"output: {path!r} must end in {' or '.join(OUTPUT_SUFFIXES)}"
        )
    return path


def parse_sweep_file(document: Mapping) -> SweepJob:
    """Validate a loaded sweep document; see the module docstring."""
    document = _mapping(document, "sweep file")
    unknown = sorted(set(document) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise SweepFileError(f"unknown key(s) {unknown}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    missing = [key for key in REQUIRED_KEYS if key not in document]
    if missing:
        raise SweepFileError(f"missing key(s) {missing}")
    system = _system(document["system"])
    settings = dict(_mapping(document.get("solver") or {}, "solver"))
    try:
        spec = SolverSpec(system, **settings)  # validates by building a Solver
    except (TypeError, ValueError, KeyError) as error:
        raise SweepFileError(f"solver: {error}") from None
    output = document.get("output")
    job = SweepJob(
        spec=spec,
        sweep=_sweep(document["sweep"]),
        duration=_number(document["duration"], "duration"),
        t0=_number(document.get("t0", 0.0), "t0"),
        warmup=_number(document.get("warmup", 0.0), "warmup"),
        initial_values=_inputs(document, "initial_values"),
        parameters=_inputs(document, "parameters"),
        output=None if output is None else check_output_path(output),
    )
    try:  # names and values against the system, before any cluster starts
        resolve_inputs(system, job.sweep, job.initial_values, job.parameters)
        check_duration(job.duration)
    except (TypeError, ValueError) as error:
        raise SweepFileError(str(error)) from None
    if job.warmup < 0:
        raise SweepFileError(f"warmup: must be >= 0, got {job.warmup}")
    return job


def load_sweep_file(path: str | os.PathLike) -> SweepJob:
    """Read and validate a sweep file.

    Raises
    ------
    FileNotFoundError
        No such file.
    SweepFileError
        Invalid YAML or content; the message names the key path.
    """
    text = Path(path).read_text()
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SweepFileError(f"{path}: not valid YAML ({error})") from None
    return parse_sweep_file(document)
