"""The :class:`ODESystem`: an ODE system defined by equation strings.

An ``ODESystem`` is a value: its definition (equations, names, defaults) is
validated once at construction, it is immutable, compares and hashes by that
definition, and pickles as that definition. The generated ``dxdt`` and
``observables`` functions are built lazily per precision, cached on the
instance, and never pickled (a dask worker rebuilds them on first use).
The generated code includes the system's Jacobian, differentiated from the
equations (:mod:`cubie_kernel.systems.jacobian`) unless the user supplies one.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import threading
from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cubie_kernel.systems.equations import (
    ParsedSystem,
    SystemDefinitionError,
    compile_functions,
    generate_source,
    parse_system,
    resolve_precision,
)
from cubie_kernel.systems.jacobian import is_autonomous, jacobian_to_dict, parse_jacobian

_cache_lock = threading.Lock()

#: Generated code shared by equal systems (e.g. one unpickled per dask task),
#: so downstream compilers keyed by function identity compile once.
#: (definition key, precision name) -> (source, dxdt, observables); LRU order.
_shared: OrderedDict[tuple, tuple[str, Callable, Callable]] = OrderedDict()
_SHARED_MAX = 128


def _values(mapping: Mapping[str, Any] | None, field: str) -> dict[str, float]:
    """Validate ``{name: finite real}``; return a plain dict of floats."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise SystemDefinitionError(
            f"{field} must be a mapping of name -> value, got {type(mapping).__name__}")
    out = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise SystemDefinitionError(f"{field}: key {key!r} is not a string")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise SystemDefinitionError(
                f"{field}[{key!r}] must be a finite real number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise SystemDefinitionError(
                f"{field}[{key!r}] must be a finite real number, got {value!r}")
        out[key] = value
    return out


def _labels(mapping: Mapping[str, str] | None, field: str,
            allowed: tuple[str, ...]) -> dict[str, str]:
    """Validate ``{known name: non-empty string}`` (units, long names)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise SystemDefinitionError(
            f"{field} must be a mapping of name -> string, got {type(mapping).__name__}")
    out = {}
    for key, value in mapping.items():
        if key not in allowed:
            raise SystemDefinitionError(
                f"{field}: unknown name {key!r}; allowed: {', '.join(map(repr, allowed))} "
                "('t' is time)")
        if not isinstance(value, str) or not value.strip():
            raise SystemDefinitionError(
                f"{field}[{key!r}] must be a non-empty string, got {value!r}")
        out[key] = value.strip()
    return out


class ODESystem:
    """An ODE system ``dx/dt = f(x, p, t)`` written as equation strings.

    Parameters
    ----------
    equations : sequence of str
        ``"d<state> = <expr>"`` gives the derivative of ``<state>``; any other
        ``"<name> = <expr>"`` is an auxiliary, usable by later equations and
        by observables. Every state needs exactly one derivative.
    states : mapping of str to float
        State name -> default initial value; the order is the state order.
    parameters : mapping of str to float, optional
        Parameter name -> default value. Parameters may vary per run.
    constants : mapping of str to float, optional
        Constant name -> value, baked into the generated code.
    observables : sequence of str, optional
        ``"<name> = <expr>"`` quantities computed from a state; they may use
        auxiliaries and earlier observables.
    name : str, optional
        A label for messages and generated code.
    units : mapping of str to str, optional
        Units of states, parameters and observables by name, and of time
        under ``"t"`` (UDUNITS strings such as ``"m s-1"`` or ``"s"``). Results
        carry them as CF ``units`` attributes, so xarray labels plot axes.
    long_names : mapping of str to str, optional
        Descriptive names by the same keys (CF ``long_name``).
    jacobian : mapping of str to mapping of str to str, optional
        A hand-written Jacobian, ``{row state: {column: expression}}``: the
        entry ``jacobian["y"]["x"]`` is ``d(dy)/dx``, the derivative of
        state ``y``'s right-hand side by state ``x``; the column ``"t"``
        holds the partial time derivative at fixed state. Entries not given
        are zero. Expressions follow the equations' rules and may use
        states, parameters, constants, ``t``, ``pi`` and the auxiliaries the
        equations define. When given it replaces the Jacobian differentiated
        from the equations entirely (time derivatives too); it is part of the
        definition (equality, hash, pickling, :meth:`to_dict`, :attr:`digest`).

    Raises
    ------
    ValueError
        :class:`~cubie_kernel.systems.equations.SystemDefinitionError` naming
        the offending equation or field.

    Notes
    -----
    Expressions allow numbers, names (states, parameters, constants, ``t``,
    ``pi``, earlier auxiliaries), ``+ - * / **``, unary minus, comparisons
    with ``and``/``or``/``not`` inside ``a if cond else b``, and the functions
    in :data:`~cubie_kernel.systems.equations.ALLOWED_FUNCTIONS`.

    The generated functions include the Jacobian for implicit and
    Rosenbrock methods (see :meth:`lane_functions`), differentiated
    analytically from the equations unless ``jacobian`` is given.

    Examples
    --------
    >>> decay = ODESystem(["dy = -k*y"], states={"y": 1.0}, parameters={"k": 0.5})
    >>> dxdt, _ = decay.python_functions("float64")
    >>> out = np.zeros(1)
    >>> dxdt(np.array([2.0]), np.array([0.5]), 0.0, out)
    >>> float(out[0])
    -1.0
    """

    __slots__ = ("_name", "_equations", "_states", "_parameters", "_constants",
                 "_observables", "_units", "_long_names", "_jacobian", "_parsed", "_key",
                 "_built")

    def __init__(
        self,
        equations: Sequence[str] | str,
        states: Mapping[str, float],
        parameters: Mapping[str, float] | None = None,
        constants: Mapping[str, float] | None = None,
        observables: Sequence[str] | str | None = None,
        name: str = "ode_system",
        units: Mapping[str, str] | None = None,
        long_names: Mapping[str, str] | None = None,
        jacobian: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise SystemDefinitionError(f"name must be a non-empty string, got {name!r}")
        if states is None:
            raise SystemDefinitionError("states must be a mapping of name -> initial value")
        state_values = _values(states, "states")
        parameter_values = _values(parameters, "parameters")
        constant_values = _values(constants, "constants")
        parsed = parse_system(equations, tuple(state_values), tuple(parameter_values),
                              tuple(constant_values), observables)
        texts = tuple(eq.text for eq in parsed.equations)
        observable_texts = tuple(o.text for o in parsed.observables)
        described = ("t", *parsed.state_names, *parsed.parameter_names,
                     *parsed.observable_names)
        unit_strings = _labels(units, "units", described)
        long_name_strings = _labels(long_names, "long_names", described)
        jacobian_entries = parse_jacobian(parsed, jacobian)
        key = (name, texts, tuple(state_values.items()), tuple(parameter_values.items()),
               tuple(constant_values.items()), observable_texts,
               tuple(unit_strings.items()), tuple(long_name_strings.items()),
               jacobian_entries)
        for slot, value in (("_name", name), ("_equations", texts),
                            ("_states", state_values), ("_parameters", parameter_values),
                            ("_constants", constant_values),
                            ("_observables", observable_texts), ("_units", unit_strings),
                            ("_long_names", long_name_strings),
                            ("_jacobian", jacobian_entries), ("_parsed", parsed),
                            ("_key", key), ("_built", {})):
            object.__setattr__(self, slot, value)

    # ------------------------------------------------------------------ value semantics

    def __setattr__(self, attr: str, value: object) -> None:
        raise AttributeError(f"ODESystem is immutable (cannot set {attr!r})")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(f"ODESystem is immutable (cannot delete {attr!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ODESystem):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self):
        return (_rebuild, (type(self), self.to_dict()))

    def __repr__(self) -> str:
        return (f"ODESystem(name={self._name!r}, states={self.state_names}, "
                f"parameters={self.parameter_names}, observables={self.observable_names})")

    def to_dict(self) -> dict[str, Any]:
        """The definition as plain data (lists, dicts, floats, str).

        ``ODESystem(**system.to_dict()) == system`` holds, and the result is
        JSON-serialisable.
        """
        out = {
            "equations": list(self._equations),
            "states": dict(self._states),
            "parameters": dict(self._parameters),
            "constants": dict(self._constants),
            "observables": list(self._observables),
            "name": self._name,
        }
        # only when given: systems without them keep their digest (and tokens)
        if self._units:
            out["units"] = dict(self._units)
        if self._long_names:
            out["long_names"] = dict(self._long_names)
        if self._jacobian is not None:
            out["jacobian"] = jacobian_to_dict(self._jacobian)
        return out

    @property
    def digest(self) -> str:
        """SHA-256 hex digest of the definition, stable across processes.

        Unlike ``hash()``, which is salted per process for strings, this can
        key caches shared between machines.
        """
        text = json.dumps(self.to_dict(), sort_keys=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------------ names

    @property
    def name(self) -> str:
        return self._name

    @property
    def units(self) -> dict[str, str]:
        """Declared units by name (``"t"`` for time); a copy."""
        return dict(self._units)

    @property
    def long_names(self) -> dict[str, str]:
        """Declared long names by name (``"t"`` for time); a copy."""
        return dict(self._long_names)

    @property
    def equations(self) -> tuple[str, ...]:
        """The equation strings, stripped, in definition order."""
        return self._equations

    @property
    def observable_equations(self) -> tuple[str, ...]:
        """The observable strings, stripped, in definition order."""
        return self._observables

    @property
    def state_names(self) -> tuple[str, ...]:
        return self._parsed.state_names

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self._parsed.parameter_names

    @property
    def constant_names(self) -> tuple[str, ...]:
        return self._parsed.constant_names

    @property
    def observable_names(self) -> tuple[str, ...]:
        return self._parsed.observable_names

    @property
    def n_states(self) -> int:
        return len(self._parsed.state_names)

    @property
    def n_parameters(self) -> int:
        return len(self._parsed.parameter_names)

    @property
    def n_observables(self) -> int:
        return len(self._parsed.observables)

    @property
    def initial_values(self) -> dict[str, float]:
        """Default initial value per state (a copy)."""
        return dict(self._states)

    @property
    def default_parameters(self) -> dict[str, float]:
        """Default value per parameter (a copy)."""
        return dict(self._parameters)

    @property
    def constants(self) -> dict[str, float]:
        """Value per constant (a copy)."""
        return dict(self._constants)

    @property
    def jacobian(self) -> dict[str, dict[str, str]] | None:
        """The user-supplied Jacobian, ``{row: {column: expression}}`` (a copy),
        or ``None`` when the Jacobian is differentiated from the equations."""
        return None if self._jacobian is None else jacobian_to_dict(self._jacobian)

    @property
    def is_autonomous(self) -> bool:
        """True when no derivative reads ``t``, directly or through auxiliaries
        (then the time derivative of :meth:`lane_functions` is zero)."""
        return is_autonomous(self._parsed)

    @property
    def parsed(self) -> ParsedSystem:
        """The validated equations (for code generators such as Jacobians)."""
        return self._parsed

    # ------------------------------------------------------------------ generated code

    def _generated(self, precision: object) -> tuple[str, dict[str, Callable]]:
        dtype = resolve_precision(precision)
        built = self._built.get(dtype.name)
        if built is None:
            with _cache_lock:
                shared_key = (self._key, dtype.name)
                built = _shared.get(shared_key)
                if built is None:
                    source = generate_source(self._parsed, self._constants, dtype,
                                             self._name, self._jacobian)
                    functions = compile_functions(source, f"{self._name}-{dtype.name}")
                    built = (source, functions)
                    _shared[shared_key] = built
                    if len(_shared) > _SHARED_MAX:
                        _shared.popitem(last=False)
                else:
                    _shared.move_to_end(shared_key)
                self._built[dtype.name] = built
        return built

    def python_functions(self, precision: object = np.float64
                         ) -> tuple[Callable, Callable]:
        """The generated ``(dxdt, observables)`` for ``precision``.

        Both are plain Python functions ``f(state, parameters, t, out) -> None``
        that write ``out[i]``: the derivative of state ``i``, or observable
        ``i``, in definition order. ``state``, ``parameters`` and ``out`` are
        1-D arrays of ``precision`` and ``t`` a scalar of it. They compile
        with ``numba.njit`` and ``numba.cuda.jit(device=True)``; every
        literal is a ``precision`` scalar, so float32 stays float32. ``out``
        may alias ``state``.

        The same precision returns the same objects, also from equal
        systems (a process-wide cache of recent definitions), so a system
        unpickled again does not force downstream recompilation.

        Parameters
        ----------
        precision
            ``np.float32``/``np.float64``, their dtypes, or ``"float32"``/
            ``"float64"``.
        """
        functions = self._generated(precision)[1]
        return functions["dxdt"], functions["observables"]

    def lane_functions(self, precision: object = np.float64) -> dict[str, Callable]:
        """The generated functions for lane-form device code.

        ``dxdt_lane(state, parameters, t, out, j, lanes)`` and
        ``observables_lane(state, parameters, t, out, j, lanes)`` read lane
        ``j`` of lane-form arrays (element ``i`` at ``i * lanes + j``, see
        :mod:`cubie_kernel.targets`); ``dxdt_lane`` writes ``out`` in lane
        form too, ``observables_lane`` a 1-D ``out``. ``dxdt_values(t,
        *states, *parameters)`` returns the derivatives as a tuple of
        scalars (states and parameters in definition order), for steps
        that keep a stage in registers.

        ``jacobian_lane(state, parameters, t, out, j, lanes)`` writes the
        Jacobian ``J[i][k] = d f_i / d x_k`` (``f_i`` the derivative of state
        ``i``) of lane ``j`` to ``out[(i * n + k) * lanes + j]`` for all ``i,
        k``, zeros included; ``time_derivative_lane(state, parameters, t,
        out, j, lanes)`` writes the partial ``d f_i / d t`` at fixed state to
        ``out[i * lanes + j]``. Both are differentiated analytically from the
        equations (:mod:`cubie_kernel.systems.jacobian`), or come from the
        ``jacobian`` given to the constructor. With ``lanes=1, j=0`` the
        ``*_lane`` functions work on plain 1-D arrays.
        """
        functions = self._generated(precision)[1]
        return {name: functions[name] for name in (
            "dxdt_lane", "observables_lane", "dxdt_values", "jacobian_lane",
            "time_derivative_lane")}

    @property
    def definition_key(self) -> tuple:
        """What decides the generated code: equations, names in order, constants,
        and a user-supplied Jacobian (only when given)."""
        key = (self._name, self._equations, tuple(self._states), tuple(self._parameters),
               tuple(self._constants.items()), self._observables)
        if self._jacobian is not None:
            key += (tuple((e.row, e.column, e.text) for e in self._jacobian),)
        return key

    def source(self, precision: object = np.float64) -> str:
        """The generated Python source of the system's functions, for reading."""
        return self._generated(precision)[0]


def _rebuild(cls: type, definition: dict[str, Any]) -> ODESystem:
    """Unpickle: validate the definition again, build functions lazily."""
    return cls(**definition)
