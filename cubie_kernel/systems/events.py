"""Events: conditions on a run's trajectory, declared as expression strings.

An :class:`Event` names a function ``g(t, states, parameters, observables)``
(``condition``); the integration loop finds the times at which ``g``
crosses zero (:mod:`cubie_kernel.integrators.events`) and records them, can
end the run there (``terminal``), or can assign new values to states and
go on (``reset``: integrate-and-fire neurons, bouncing balls, impulses).

This module validates events against a system and generates their device
code, with the same expression language and the same precision-typed
literals as the system's own equations
(:mod:`cubie_kernel.systems.equations`)::

    def event_values_lane(state, parameters, t, out, _j, _lanes): ...
    def event_reset_lane(which, state, parameters, t, _j, _lanes): ...

``event_values_lane`` writes ``g`` of every event to ``out[e * _lanes +
_j]``; ``event_reset_lane`` applies the reset of event ``which`` to lane
``_j`` of ``state`` in place. The assignments of one reset are
simultaneous: every right-hand side reads the state before the reset.
"""

from __future__ import annotations

import ast
from typing import Any, Callable, Mapping, Sequence

import attrs
import numpy as np

from cubie_kernel.systems.equations import (
    SystemDefinitionError,
    _as_strings,
    _Checker,
    _Emitter,
    _ExprError,
    _split_assignment,
    _unpack_names,
    check_name,
    resolve_precision,
)

#: Allowed values of :attr:`Event.direction`.
DIRECTIONS = (-1, 0, 1)

#: Default number of crossings recorded per event and run.
DEFAULT_MAX_RECORDS = 16

#: Largest :attr:`Event.max_records` accepted (records are preallocated per run).
MAX_RECORDS_LIMIT = 1_000_000

#: Largest :attr:`Event.interior_points` accepted.
MAX_INTERIOR_POINTS = 64

#: The generated functions, in order.
EVENT_FUNCTIONS = ("event_values_lane", "event_reset_lane")


class EventDefinitionError(ValueError):
    """An event is invalid or does not fit its system; the message names it and the field."""


def _as_reset(value: Any) -> tuple[str, ...]:
    """Reset assignments as a tuple of strings (one string may join them with ';')."""
    if isinstance(value, str):
        value = value.replace(";", "\n")
    try:
        return _as_strings(value, "reset")
    except SystemDefinitionError as err:
        raise EventDefinitionError(str(err)) from None


@attrs.frozen
class Event:
    """A zero crossing to find in every run.

    Parameters
    ----------
    name : str
        Names the results: ``<name>_time(run, record)``,
        ``<name>_<state>(run, record)`` and ``<name>_count(run)``.
    condition : str
        An expression of ``t``, states, parameters, constants, auxiliaries
        and observables (the equations' language); the event happens where
        it crosses zero.
    direction : {-1, 0, 1}
        +1: only crossings from negative to non-negative (rising), -1: only
        from positive to non-positive (falling), 0: both.
    terminal : bool
        End the run at the first crossing; its status gets the
        ``terminated_by_event`` bit (not a failure) and its final state is
        the state at the crossing.
    max_records : int
        Crossings recorded per run (times and states); later crossings are
        still counted in ``<name>_count``.
    reset : sequence of str
        Assignments ``"<state> = <expression>"`` applied at each crossing
        before the run goes on; all right-hand sides read the state at the
        crossing (before any assignment). Not allowed with ``terminal``.
    interior_points : int
        0 (default): the condition is compared at each step's ends only, so
        a crossing and its return within one step are not seen (as in
        scipy). ``k > 0``: it is also evaluated at ``k`` evenly spaced points
        inside every step (on the step's interpolant), which finds crossings
        closer together than a step, at the cost of ``k`` interpolations and
        evaluations per step (e.g. a bouncing ball's short flights; the
        same idea as DifferentialEquations.jl's ``interp_points``).

    Examples
    --------
    >>> spike = Event("spike", "v - v_th", direction=1, reset=["v = v_reset"])
    >>> spike.reset
    ('v = v_reset',)
    """

    name: str
    condition: str
    direction: int = 0
    terminal: bool = False
    max_records: int = DEFAULT_MAX_RECORDS
    reset: tuple[str, ...] = attrs.field(default=(), converter=_as_reset)
    interior_points: int = 0

    def __attrs_post_init__(self) -> None:
        try:
            check_name(self.name, "event")
        except ValueError as err:
            raise EventDefinitionError(str(err)) from None
        label = f"event {self.name!r}"
        if not isinstance(self.condition, str) or not self.condition.strip():
            raise EventDefinitionError(
                f"{label}: condition must be a non-empty expression string, got "
                f"{self.condition!r}"
            )
        direction = self.direction
        if isinstance(direction, bool) or direction not in DIRECTIONS or not isinstance(
            direction, (int, np.integer)
        ):
            raise EventDefinitionError(
                f"{label}: direction must be one of -1, 0, 1, got {direction!r}"
            )
        object.__setattr__(self, "direction", int(direction))
        if not isinstance(self.terminal, (bool, np.bool_)):
            raise EventDefinitionError(
                f"{label}: terminal must be True or False, got {self.terminal!r}"
            )
        object.__setattr__(self, "terminal", bool(self.terminal))
        for field, high in (("max_records", MAX_RECORDS_LIMIT),
                            ("interior_points", MAX_INTERIOR_POINTS)):
            value = getattr(self, field)
            if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                    or not 0 <= value <= high):
                raise EventDefinitionError(
                    f"{label}: {field} must be an int from 0 to {high}, got {value!r}"
                )
            object.__setattr__(self, field, int(value))
        if self.terminal and self.reset:
            raise EventDefinitionError(
                f"{label}: a terminal event ends the run, so its reset {list(self.reset)} "
                "would never be integrated; drop the reset or terminal=True"
            )

    @property
    def acts(self) -> bool:
        """The event changes the run (ends it or resets states)."""
        return self.terminal or bool(self.reset)

    @classmethod
    def from_dict(cls, value: "Event | Mapping[str, Any]") -> "Event":
        """An Event from itself or from a mapping of its fields (sweep files)."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise EventDefinitionError(
                f"an event must be an Event or a mapping of its fields, got {value!r}"
            )
        fields = [f.name for f in attrs.fields(cls)]
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise EventDefinitionError(
                f"event {value.get('name', '?')!r}: unknown field(s) {unknown}; "
                f"allowed: {', '.join(fields)}"
            )
        missing = [f for f in ("name", "condition") if f not in value]
        if missing:
            raise EventDefinitionError(f"event {dict(value)!r} needs {' and '.join(missing)}")
        return cls(**value)

    def canonical(self) -> dict[str, Any]:
        """The fields as plain values (settings tokens, sweep files)."""
        return {
            "name": self.name,
            "condition": self.condition,
            "direction": self.direction,
            "terminal": self.terminal,
            "max_records": self.max_records,
            "reset": list(self.reset),
            "interior_points": self.interior_points,
        }


def as_events(value: Any) -> tuple[Event, ...]:
    """``value`` (None, one Event or mapping, or a sequence of them) as a tuple of Events.

    Raises EventDefinitionError for a bad item or two events of one name.
    """
    if value is None:
        return ()
    if isinstance(value, (Event, Mapping)):
        value = [value]
    if isinstance(value, str):
        raise EventDefinitionError(
            f"events must be Event objects or mappings of their fields, got the string {value!r}"
        )
    try:
        items = list(value)
    except TypeError:
        raise EventDefinitionError(
            f"events must be a sequence of Event objects or mappings, got {value!r}"
        ) from None
    events = tuple(Event.from_dict(item) for item in items)
    seen = set()
    for event in events:
        if event.name in seen:
            raise EventDefinitionError(f"two events are named {event.name!r}")
        seen.add(event.name)
    return events


@attrs.frozen
class _Parsed:
    """One event checked against a system: its condition and its resets."""

    event: Event
    condition: ast.expr = attrs.field(eq=False)
    names: frozenset[str]
    resets: tuple[tuple[int, ast.expr], ...] = attrs.field(eq=False)
    reset_names: frozenset[str]


def _scope(system) -> set[str]:
    parsed = system.parsed
    scope = set(parsed.state_names) | set(parsed.parameter_names) | set(parsed.constant_names)
    scope |= {"t", "pi"}
    scope |= {eq.target for eq in parsed.equations if eq.kind == "auxiliary"}
    scope |= set(parsed.observable_names)
    return scope


def result_names(event: Event, state_names: Sequence[str]) -> tuple[str, ...]:
    """The result variables of ``event``: ``<name>_time``, ``<name>_<state>``, ``<name>_count``."""
    return (f"{event.name}_time", *(f"{event.name}_{s}" for s in state_names),
            f"{event.name}_count")


def parse_events(events: Sequence[Event], system) -> tuple[_Parsed, ...]:
    """Check ``events`` against ``system``: names, conditions and resets.

    Raises
    ------
    EventDefinitionError
        Naming the event and what is wrong: a name that is also a system
        name, an expression error, a reset of something that is not a state.
    """
    scope = _scope(system)
    states = system.state_names
    taken = set(states) | set(system.parameter_names) | set(system.observable_names)
    taken |= set(system.constant_names)
    out = []
    results: dict[str, str] = {}
    for event in events:
        label = f"event {event.name!r}"
        if event.name in taken:
            raise EventDefinitionError(
                f"{label}: its name is also a name of system {system.name!r}; rename the event"
            )
        for result in result_names(event, states):
            if result in taken or result in results:
                other = results.get(result, f"a name of system {system.name!r}")
                raise EventDefinitionError(
                    f"{label}: its result {result!r} is also {other}; rename the event"
                )
            results[result] = f"a result of event {event.name!r}"
        try:
            condition = ast.parse(event.condition.strip(), mode="eval").body
            checker = _Checker(scope, {})
            checker.numeric(condition)
        except SyntaxError as err:
            raise EventDefinitionError(
                f"{label}: condition {event.condition!r}: syntax error: {err.msg}"
            ) from None
        except _ExprError as err:
            raise EventDefinitionError(
                f"{label}: condition {event.condition!r}: {err}"
            ) from None
        resets = []
        reset_names: set[str] = set()
        assigned = set()
        for text in event.reset:
            try:
                target, expr = _split_assignment(text)
                reset_checker = _Checker(scope, {})
                reset_checker.numeric(expr)
            except _ExprError as err:
                raise EventDefinitionError(f"{label}: reset {text!r}: {err}") from None
            if target not in states:
                raise EventDefinitionError(
                    f"{label}: reset {text!r} assigns {target!r}, which is not a state "
                    f"(states: {', '.join(map(repr, states))})"
                )
            if target in assigned:
                raise EventDefinitionError(f"{label}: reset assigns {target!r} twice")
            assigned.add(target)
            resets.append((states.index(target), expr))
            reset_names |= reset_checker.used
        out.append(_Parsed(event, condition, frozenset(checker.used), tuple(resets),
                           frozenset(reset_names)))
    return tuple(out)


def _needed(system, names: set[str]) -> list:
    """Auxiliaries and observables that ``names`` depend on, in definition order."""
    parsed = system.parsed
    defined = [eq for eq in parsed.equations if eq.kind == "auxiliary"] + list(
        parsed.observables
    )
    needed = set(names)
    keep = []
    for eq in reversed(defined):
        if eq.target in needed:
            needed |= eq.names
            keep.append(eq)
    return keep[::-1]


def _computed(emit: _Emitter, equations) -> list[str]:
    lines = []
    for eq in equations:
        pre: list[str] = []
        text = emit.statement_expr(eq.expr, pre)
        lines += [f"# {eq.target} = {ast.unparse(eq.expr)}", *pre, f"{eq.target} = {text}"]
    return lines


def event_source(system, events: Sequence[Event], precision: object) -> str:
    """Source of a module defining :data:`EVENT_FUNCTIONS` for ``events`` of ``system``."""
    dtype = resolve_precision(precision)
    parsed = parse_events(events, system)
    emit = _Emitter(dtype, system.constants)

    used = set().union(*(p.names for p in parsed)) if parsed else set()
    needed = _needed(system, used)
    used_all = used.union(*(eq.names for eq in needed))
    values = _unpack_names(system.parsed, used_all, lane=True) + _computed(emit, needed)
    for e, p in enumerate(parsed):
        pre: list[str] = []
        text = emit.statement_expr(p.condition, pre)
        values += [f"# {p.event.name}: {ast.unparse(p.condition)}", *pre,
                   f"out[{e} * _lanes + _j] = {text}"]

    reset_used = set().union(*(p.reset_names for p in parsed)) if parsed else set()
    reset_needed = _needed(system, reset_used)
    reset_all = reset_used.union(*(eq.names for eq in reset_needed))
    resets = _unpack_names(system.parsed, reset_all, lane=True) + _computed(emit, reset_needed)
    branch = "if"
    for e, p in enumerate(parsed):
        if not p.resets:
            continue
        resets.append(f"{branch} which == {e}:  # {p.event.name}")
        branch = "elif"
        for r, (index, expr) in enumerate(p.resets):
            pre = []
            text = emit.statement_expr(expr, pre)
            resets += [f"    {line}" for line in pre] + [f"    _r{r} = {text}"]
        for r, (index, _) in enumerate(p.resets):
            resets.append(f"    state[{index} * _lanes + _j] = _r{r}")

    numbers = [(c, float(system.constants[c])) for c in system.constant_names
               if c in emit.used_globals]
    numbers += [("pi", float(np.pi))] if "pi" in emit.used_globals else []
    numbers += list(emit.literals.values())
    for label, value in numbers:
        with np.errstate(over="ignore"):
            if not np.isfinite(dtype.type(value)):
                raise EventDefinitionError(
                    f"events of system {system.name!r}: number {label} = {value!r} overflows "
                    f"{dtype.name}"
                )
    names = ", ".join(repr(e.name) for e in events)
    lines = [
        f"# Generated by cubie_kernel.systems.events for events {names} of ODESystem "
        f"{system.name!r}, precision {dtype.name}.",
        "import math", "", "import numpy as np", "",
        *[f"{label} = np.{dtype.name}({value!r})" for label, value in numbers], "", "",
        "def event_values_lane(state, parameters, t, out, _j, _lanes):",
        "    # out[e * _lanes + _j] = the condition of event e",
        *[f"    {line}" for line in values], "    return", "", "",
        "def event_reset_lane(which, state, parameters, t, _j, _lanes):",
        "    # apply the reset of event `which` to lane _j of state",
        *[f"    {line}" for line in resets], "    return", "",
    ]
    return "\n".join(lines)


def event_functions(system, events: Sequence[Event], precision: object) -> dict[str, Callable]:
    """The compiled-ready functions of :func:`event_source`, by name."""
    from cubie_kernel import kernel_cache

    module = kernel_cache.import_source("events", event_source(system, events, precision))
    return {name: getattr(module, name) for name in EVENT_FUNCTIONS}
