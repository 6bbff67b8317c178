"""Equation strings: parsing, validation and code generation.

An ODE system is written as assignment strings such as ``"dx = sigma*(y - x)"``.
This module turns them, with Python's :mod:`ast` and never ``eval``, into

1. a validated :class:`ParsedSystem` (every name resolved, every construct
   checked against a small expression language), and
2. the source text of plain Python functions::

       def dxdt(state, parameters, t, out): ...
       def observables(state, parameters, t, out): ...

   (and their lane-form variants, ``dxdt_values``, and the analytic Jacobian
   ``jacobian_lane`` and ``time_derivative_lane`` of
   :mod:`cubie_kernel.systems.jacobian`) that compile unchanged with
   ``numba.njit`` and ``numba.cuda.jit(device=True)``.

Every number in the generated code (literals, user constants, ``pi``) is a
NumPy scalar of the requested precision, bound to a module-level name. numba's
CPU target promotes ``float32 * python_float`` to float64 while the CUDA
simulator keeps float32; with precision-typed constants both targets compute
the same float32 operations. Small integer powers become multiplications.

Expression language
-------------------
numbers; names (states, parameters, constants, ``t``, ``pi``, auxiliaries
defined by earlier equations); ``+ - * / **``, unary ``-``/``+``; parentheses;
comparisons, ``and``/``or``/``not`` (only as the condition of ``a if cond else
b``); calls to the functions in :data:`ALLOWED_FUNCTIONS`.
"""

from __future__ import annotations

import ast
import copy
import itertools
import keyword
import math
import re
from typing import Callable, Iterable, Mapping, Sequence

import attrs
import numpy as np

#: Allowed function name -> (generated callee, minimum and maximum argument
#: count; ``None`` for no maximum).
ALLOWED_FUNCTIONS: dict[str, tuple[str, int, int | None]] = {
    **{f: (f"math.{f}", 1, 1) for f in (
        "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
        "asinh", "acosh", "atanh", "exp", "expm1", "log", "log1p", "log2",
        "log10", "sqrt", "erf", "erfc", "fabs", "floor", "ceil")},
    "atan2": ("math.atan2", 2, 2),
    "hypot": ("math.hypot", 2, 2),
    "pow": ("math.pow", 2, 2),
    "copysign": ("math.copysign", 2, 2),
    "abs": ("abs", 1, 1),
    "min": ("min", 2, None),
    "max": ("max", 2, None),
}

#: Functions whose numba CPU implementation returns an integer: their result
#: is cast back to the precision (numba-cuda already returns a float there).
_INTEGER_RESULT = frozenset({"floor", "ceil"})

#: Names the generated code itself uses; user names may not take them.
RESERVED_NAMES: frozenset[str] = frozenset(
    {"t", "pi", "math", "np", "state", "parameters", "out", "dxdt", "observables",
     "dxdt_lane", "observables_lane", "dxdt_values", "jacobian_lane", "time_derivative_lane"}
    | set(ALLOWED_FUNCTIONS)
)

#: Largest ``|n|`` for which ``x ** n`` with integer ``n`` becomes multiplications.
MAX_EXPANDED_POWER = 4

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_COMPARISONS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
_SYNTAX_NAMES = {
    ast.Attribute: "attribute access", ast.Subscript: "subscripts",
    ast.Lambda: "lambdas", ast.List: "lists", ast.Tuple: "tuples",
    ast.Dict: "dicts", ast.Set: "sets", ast.JoinedStr: "f-strings",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "generators",
    ast.Starred: "star arguments", ast.NamedExpr: "':=' assignments",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.Slice: "slices",
}


class SystemDefinitionError(ValueError):
    """An ODE system definition is invalid; the message names the culprit."""


class _ExprError(Exception):
    """A problem inside one expression; re-raised with the equation's text."""


@attrs.frozen
class Equation:
    """One validated assignment ``target = expr``.

    Attributes
    ----------
    text : str
        The user's string, stripped.
    target : str
        The assigned name (``"dx"`` for the derivative of state ``x``).
    kind : str
        ``"derivative"``, ``"auxiliary"`` or ``"observable"``.
    state : str or None
        For a derivative, the state it belongs to.
    expr : ast.expr
        The validated right-hand side.
    names : frozenset of str
        Every name the right-hand side reads.
    """

    text: str
    target: str
    kind: str
    state: str | None
    expr: ast.expr = attrs.field(eq=False, repr=False)
    names: frozenset[str] = attrs.field(repr=False)


@attrs.frozen
class ParsedSystem:
    """A validated system: declared names and equations, in definition order."""

    state_names: tuple[str, ...]
    parameter_names: tuple[str, ...]
    constant_names: tuple[str, ...]
    equations: tuple[Equation, ...]
    observables: tuple[Equation, ...]

    @property
    def observable_names(self) -> tuple[str, ...]:
        return tuple(o.target for o in self.observables)


# --------------------------------------------------------------------------- parsing


def check_name(name: object, what: str) -> str:
    """Return ``name`` if it can name a state, parameter, constant or variable.

    Raises
    ------
    SystemDefinitionError
        If ``name`` is not an ASCII identifier starting with a letter, is a
        Python keyword, or is reserved (see :data:`RESERVED_NAMES`).
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SystemDefinitionError(
            f"{what} name {name!r} is not valid: use letters, digits and '_', "
            "starting with a letter"
        )
    if keyword.iskeyword(name):
        raise SystemDefinitionError(f"{what} name {name!r} is a Python keyword")
    if name in RESERVED_NAMES:
        role = ("an allowed function" if name in ALLOWED_FUNCTIONS
                else "used by the generated code")
        raise SystemDefinitionError(f"{what} name {name!r} is reserved ({role})")
    return name


def _split_assignment(text: str) -> tuple[str, ast.expr]:
    try:
        module = ast.parse(text, mode="exec")
    except SyntaxError as exc:
        raise _ExprError(f"syntax error: {exc.msg}") from None
    body = module.body
    if len(body) != 1 or not isinstance(body[0], ast.Assign):
        raise _ExprError("expected exactly one assignment '<name> = <expression>'")
    assign = body[0]
    if len(assign.targets) != 1 or not isinstance(assign.targets[0], ast.Name):
        raise _ExprError("the left-hand side must be a single name")
    return assign.targets[0].id, assign.value


def _constant_value(node: ast.expr) -> float | None:
    """The value of a numeric literal, optionally signed, else ``None``."""
    sign = 1.0
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sign * float(node.value)
    return None


class _Checker:
    """Validates one expression against the names in scope."""

    def __init__(self, scope: set[str], hints: Mapping[str, str]):
        self.scope = scope
        self.hints = hints
        self.used: set[str] = set()

    def numeric(self, node: ast.expr) -> None:
        if self._visit(node) != "number":
            raise _ExprError(
                f"{ast.unparse(node)!r} is a condition, not a number; "
                "use it as '<a> if <condition> else <b>'"
            )

    def condition(self, node: ast.expr) -> None:
        if self._visit(node) != "condition":
            raise _ExprError(
                f"{ast.unparse(node)!r} is a number, not a condition; "
                "compare it, e.g. '<a> if x > 0 else <b>'"
            )

    def _visit(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            value = node.value
            if type(value) not in (int, float):
                kind = "strings" if isinstance(value, (str, bytes)) else repr(value)
                raise _ExprError(f"{kind} are not allowed; only real numbers")
            try:
                ok = math.isfinite(float(value))
            except OverflowError:
                ok = False
            if not ok:
                raise _ExprError(f"number {value!r} is not finite")
            return "number"
        if isinstance(node, ast.Name):
            if node.id not in self.scope:
                hint = self.hints.get(node.id, "")
                raise _ExprError(f"unknown name {node.id!r}{hint}")
            self.used.add(node.id)
            return "number"
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise _ExprError(
                    f"operator {type(node.op).__name__} is not allowed; "
                    "use + - * / **"
                )
            self.numeric(node.left)
            self.numeric(node.right)
            return "number"
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                self.condition(node.operand)
                return "condition"
            if isinstance(node.op, ast.Invert):
                raise _ExprError("operator '~' is not allowed")
            self.numeric(node.operand)
            return "number"
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if not isinstance(op, _COMPARISONS):
                    raise _ExprError(
                        f"comparison {type(op).__name__} is not allowed; "
                        "use < <= > >= == !="
                    )
            for operand in (node.left, *node.comparators):
                self.numeric(operand)
            return "condition"
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self.condition(value)
            return "condition"
        if isinstance(node, ast.IfExp):
            self.condition(node.test)
            self.numeric(node.body)
            self.numeric(node.orelse)
            return "number"
        if isinstance(node, ast.Call):
            self._call(node)
            return "number"
        what = _SYNTAX_NAMES.get(type(node), type(node).__name__)
        raise _ExprError(f"{what} not allowed in equations")

    def _call(self, node: ast.Call) -> None:
        allowed = ", ".join(sorted(ALLOWED_FUNCTIONS))
        if not isinstance(node.func, ast.Name):
            raise _ExprError(
                f"cannot call {ast.unparse(node.func)!r}; allowed functions: {allowed}"
            )
        fname = node.func.id
        if fname not in ALLOWED_FUNCTIONS:
            raise _ExprError(
                f"function {fname!r} is not allowed; allowed functions: {allowed}"
            )
        if node.keywords:
            raise _ExprError(f"keyword arguments are not allowed (in call to {fname!r})")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise _ExprError("star arguments are not allowed")
        _, low, high = ALLOWED_FUNCTIONS[fname]
        n = len(node.args)
        if n < low or (high is not None and n > high):
            expected = str(low) if low == high else (
                f"at least {low}" if high is None else f"{low} to {high}")
            raise _ExprError(f"{fname}() takes {expected} arguments, got {n}")
        for arg in node.args:
            self.numeric(arg)


def _as_strings(values: object, field: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = values.splitlines()
    try:
        items = list(values)
    except TypeError:
        raise SystemDefinitionError(
            f"{field} must be a sequence of strings, got {values!r}") from None
    out = []
    for item in items:
        if not isinstance(item, str):
            raise SystemDefinitionError(f"{field}: {item!r} is not a string")
        if item.strip():
            out.append(item.strip())
    return tuple(out)


def parse_system(
    equations: Sequence[str] | str,
    state_names: Sequence[str],
    parameter_names: Sequence[str] = (),
    constant_names: Sequence[str] = (),
    observables: Sequence[str] | str | None = None,
) -> ParsedSystem:
    """Parse and validate a system's equations and observables.

    Parameters
    ----------
    equations
        ``"d<state> = expr"`` for each state's derivative, and ``"<name> =
        expr"`` auxiliaries usable by later equations and by observables. A
        single string is split into lines.
    state_names, parameter_names, constant_names
        Declared names, each at most once across all three.
    observables
        ``"<name> = expr"`` strings; may use everything the equations may,
        plus auxiliaries and earlier observables.

    Returns
    -------
    ParsedSystem

    Raises
    ------
    SystemDefinitionError
        With the offending equation (or field) named in the message.
    """
    declared: dict[str, str] = {}
    for role, names in (("state", state_names), ("parameter", parameter_names),
                        ("constant", constant_names)):
        for name in names:
            check_name(name, role)
            if name in declared:
                raise SystemDefinitionError(
                    f"name {name!r} is declared twice (as a {declared[name]} "
                    f"and as a {role})")
            declared[name] = role
    states = tuple(state_names)
    if not states:
        raise SystemDefinitionError("a system needs at least one state")

    scope = set(declared) | {"t", "pi"}
    defined_by: dict[str, str] = {}
    derivative_names = {f"d{s}": s for s in states}
    all_texts = _as_strings(equations, "equations") + _as_strings(observables, "observables")
    hints = _hints(all_texts, derivative_names, scope)

    parsed_equations = []
    for text in _as_strings(equations, "equations"):
        target, expr, names = _parse_one(text, "equation", scope, hints)
        state = derivative_names.get(target)
        if state is None and target in declared:
            role = declared[target]
            fix = f"; write 'd{target} = ...' for its derivative" if role == "state" else ""
            raise SystemDefinitionError(
                f"equation {text!r}: cannot assign to {role} {target!r}{fix}")
        _check_new_target(text, "equation", target, defined_by)
        kind = "derivative" if state is not None else "auxiliary"
        if state is None:
            scope.add(target)
        parsed_equations.append(Equation(text, target, kind, state, expr, names))

    missing = [s for s in states if f"d{s}" not in defined_by]
    if missing:
        expected = ", ".join(f"'d{s} = ...'" for s in missing)
        # a left-hand side that looks like a derivative of no state is the likely typo
        strays = [eq for eq in parsed_equations
                  if eq.kind == "auxiliary" and eq.target.startswith("d") and len(eq.target) > 1]
        stray = "".join(
            f"; equation {eq.text!r} assigns {eq.target!r}, but {eq.target[1:]!r} is not a "
            f"state (states: {', '.join(map(repr, states))})" for eq in strays)
        raise SystemDefinitionError(
            f"state(s) {', '.join(map(repr, missing))} have no derivative equation "
            f"(expected {expected}){stray}")

    parsed_observables = []
    for text in _as_strings(observables, "observables"):
        target, expr, names = _parse_one(text, "observable", scope, hints)
        if target in declared:
            raise SystemDefinitionError(
                f"observable {text!r}: {target!r} is already a {declared[target]}")
        if target in derivative_names:
            raise SystemDefinitionError(
                f"observable {text!r}: {target!r} names the derivative of state "
                f"{derivative_names[target]!r}; choose another name")
        _check_new_target(text, "observable", target, defined_by)
        scope.add(target)
        parsed_observables.append(Equation(text, target, "observable", None, expr, names))

    return ParsedSystem(states, tuple(parameter_names), tuple(constant_names),
                        tuple(parsed_equations), tuple(parsed_observables))


def _hints(texts: Iterable[str], derivative_names: Mapping[str, str],
           scope: set[str]) -> dict[str, str]:
    """Extra words for 'unknown name' errors, keyed by the unknown name."""
    hints = {d: f" (derivatives like {d!r} cannot be used in expressions; "
                "assign the expression to an auxiliary and use that)"
             for d in derivative_names if d not in scope}
    for text in texts:
        target = text.split("=", 1)[0].strip()
        if target not in hints and target.isidentifier():
            hints[target] = f" ({target!r} is used before it is defined)"
    return hints


def _parse_one(text: str, what: str, scope: set[str],
               hints: Mapping[str, str]) -> tuple[str, ast.expr, frozenset[str]]:
    try:
        target, expr = _split_assignment(text)
        checker = _Checker(scope, hints)
        checker.numeric(expr)
    except _ExprError as exc:
        raise SystemDefinitionError(f"{what} {text!r}: {exc}") from None
    try:
        check_name(target, "assigned")
    except SystemDefinitionError as exc:
        raise SystemDefinitionError(f"{what} {text!r}: {exc}") from None
    return target, expr, frozenset(checker.used)


def _check_new_target(text: str, what: str, target: str,
                      defined_by: dict[str, str]) -> None:
    if target in defined_by:
        raise SystemDefinitionError(
            f"{what} {text!r}: {target!r} is already defined by {defined_by[target]!r}")
    defined_by[target] = text


# ------------------------------------------------------------------ code generation


def resolve_precision(precision: object) -> np.dtype:
    """Return the NumPy dtype for ``precision`` (float32 or float64 only)."""
    try:
        dtype = np.dtype(precision)
    except (TypeError, ValueError, AttributeError):
        dtype = None
    if dtype is None or dtype.name not in ("float32", "float64"):
        raise ValueError(f"precision must be float32 or float64, got {precision!r}")
    return dtype


class _Emitter:
    """Rewrites validated expressions into precision-typed generated code."""

    def __init__(self, dtype: np.dtype, constants: Mapping[str, float]):
        self.dtype = dtype
        self.constants = constants
        self.literals: dict[str, tuple[str, float]] = {}  # float.hex -> (name, value)
        self.used_globals: set[str] = set()
        self._temps = itertools.count()

    def literal(self, value: float) -> ast.Name:
        key = float(value).hex()
        if key not in self.literals:
            self.literals[key] = (f"_k{len(self.literals)}", float(value))
        return ast.Name(self.literals[key][0], ast.Load())

    def cast(self, node: ast.expr) -> ast.expr:
        return ast.Call(ast.Attribute(ast.Name("np", ast.Load()), self.dtype.name,
                                      ast.Load()), [node], [])

    def statement_expr(self, node: ast.expr, pre: list[str]) -> str:
        """Source text of ``node``; temporaries it needs are appended to ``pre``."""
        return ast.unparse(self.expr(node, pre))

    def expr(self, node: ast.expr, pre: list[str] | None) -> ast.expr:
        """Rewrite ``node``; ``pre is None`` inside conditional branches."""
        value = _constant_value(node)
        if value is not None:
            return self.literal(value)
        if isinstance(node, ast.Name):
            if node.id == "pi" or node.id in self.constants:
                self.used_globals.add(node.id)
            return ast.Name(node.id, ast.Load())
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                power = self._power(node, pre)
                if power is not None:
                    return power
            return ast.BinOp(self.expr(node.left, pre), node.op,
                             self.expr(node.right, pre))
        if isinstance(node, ast.UnaryOp):
            operand = self.expr(node.operand, pre)
            return operand if isinstance(node.op, ast.UAdd) else ast.UnaryOp(node.op, operand)
        if isinstance(node, ast.Compare):
            return ast.Compare(self.expr(node.left, pre), node.ops,
                               [self.expr(c, pre) for c in node.comparators])
        if isinstance(node, ast.BoolOp):
            # later operands may not run: no hoisting out of them
            return ast.BoolOp(node.op, [self.expr(node.values[0], pre)]
                              + [self.expr(v, None) for v in node.values[1:]])
        if isinstance(node, ast.IfExp):
            return ast.IfExp(self.expr(node.test, pre), self.expr(node.body, None),
                             self.expr(node.orelse, None))
        if isinstance(node, ast.Call):
            fname = node.func.id
            callee = ALLOWED_FUNCTIONS[fname][0]
            func: ast.expr = ast.Name(callee, ast.Load())
            if "." in callee:
                module, attr = callee.split(".")
                func = ast.Attribute(ast.Name(module, ast.Load()), attr, ast.Load())
            call = ast.Call(func, [self.expr(a, pre) for a in node.args], [])
            # math.* in plain Python returns a double: round it back to float32
            # (a no-op once compiled, where math.* on float32 is float32)
            narrow = self.dtype == np.float32 and "." in callee
            return self.cast(call) if fname in _INTEGER_RESULT or narrow else call
        raise AssertionError(f"unvalidated node {ast.dump(node)}")  # pragma: no cover

    def _power(self, node: ast.BinOp, pre: list[str] | None) -> ast.expr | None:
        n = _constant_value(node.right)
        if n is None or n != int(n) or abs(n) > MAX_EXPANDED_POWER:
            return None
        n = int(n)
        if n == 0:
            return self.literal(1.0)
        base = self.expr(node.left, pre)
        if abs(n) > 1 and not isinstance(base, ast.Name):
            if pre is not None:
                temp = f"_t{next(self._temps)}"
                pre.append(f"{temp} = {ast.unparse(base)}")
                base = ast.Name(temp, ast.Load())
        product = base
        for _ in range(abs(n) - 1):
            product = ast.BinOp(product, ast.Mult(), copy.deepcopy(base))
        if n < 0:
            return ast.BinOp(self.literal(1.0), ast.Div(), product)
        return product


def _needed(equations: Sequence[Equation], names: set[str]) -> list[Equation]:
    """Auxiliary equations that ``names`` depend on, in definition order."""
    needed = set(names)
    keep = []
    for eq in reversed(equations):
        if eq.kind == "auxiliary" and eq.target in needed:
            needed |= eq.names
            keep.append(eq)
    return keep[::-1]


def _unpack(parsed: ParsedSystem, equations: Sequence[Equation],
            lane: bool = False) -> list[str]:
    """Load every state and parameter that ``equations`` read.

    ``lane``: the arrays are in lane form (element ``i`` of lane ``_j`` at
    ``i * _lanes + _j``; user names start with a letter, so never clash).
    """
    return _unpack_names(parsed, set().union(set(), *(eq.names for eq in equations)), lane)


def _unpack_names(parsed: ParsedSystem, used: set[str], lane: bool = False) -> list[str]:
    """Load the states and parameters among ``used`` (see :func:`_unpack`)."""
    at = "[{} * _lanes + _j]" if lane else "[{}]"
    lines = [f"{s} = state{at.format(i)}" for i, s in enumerate(parsed.state_names)
             if s in used]
    lines += [f"{p} = parameters{at.format(i)}"
              for i, p in enumerate(parsed.parameter_names) if p in used]
    return lines


def _function(signature: str, doc: str, body: list[str]) -> list[str]:
    return [f"def {signature}:", f"    # {doc}"] + [f"    {line}" for line in body] + [
        "    return", "", ""]


def _assignment(emit: _Emitter, eq: Equation, lhs: str) -> list[str]:
    """Lines computing ``eq`` into ``lhs``, after a comment showing ``eq``."""
    pre: list[str] = []
    text = emit.statement_expr(eq.expr, pre)
    # the comment is re-printed by ast.unparse: user text never reaches the source raw
    return [f"# {eq.target} = {ast.unparse(eq.expr)}", *pre, f"{lhs} = {text}"]


def generate_source(parsed: ParsedSystem, constants: Mapping[str, float],
                    precision: object, name: str = "ode_system",
                    jacobian: Sequence | None = None) -> str:
    """Source text of a module defining the functions in :data:`GENERATED_FUNCTIONS`.

    Parameters
    ----------
    parsed
        The validated system.
    constants
        Constant name -> value, baked in as precision scalars.
    precision
        ``np.float32`` or ``np.float64`` (or their names).
    name
        The system's name, quoted in comments only.
    jacobian
        User-supplied Jacobian entries
        (:func:`cubie_kernel.systems.jacobian.parse_jacobian`), or ``None``
        to differentiate the equations.

    Returns
    -------
    str
        Python source. The functions unpack every state and parameter they
        read before writing ``out``, so ``out`` may alias ``state``.
    """
    from cubie_kernel.systems.jacobian import jacobian_functions  # it imports this module

    dtype = resolve_precision(precision)
    emit = _Emitter(dtype, constants)
    index = {s: i for i, s in enumerate(parsed.state_names)}

    # dxdt: the auxiliaries the derivatives need, in definition order
    derivatives = [eq for eq in parsed.equations if eq.kind == "derivative"]
    aux = _needed(parsed.equations, set().union(*(d.names for d in derivatives)))
    dxdt_eqs = [eq for eq in parsed.equations if eq.kind == "derivative" or eq in aux]
    computed = []
    for eq in dxdt_eqs:
        lhs = f"_d{index[eq.state]}" if eq.kind == "derivative" else eq.target
        computed += _assignment(emit, eq, lhs)
    n = len(parsed.state_names)
    stores = [f"out[{i}] = _d{i}" for i in range(n)]
    lane_stores = [f"out[{i} * _lanes + _j] = _d{i}" for i in range(n)]
    dxdt_body = _unpack(parsed, dxdt_eqs) + computed + stores
    dxdt_lane_body = _unpack(parsed, dxdt_eqs, lane=True) + computed + lane_stores
    values = ", ".join(f"_d{i}" for i in range(n)) + ("," if n == 1 else "")
    dxdt_values_body = computed + [f"return ({values})"]

    # observables: again only the auxiliaries they need
    aux = _needed(parsed.equations, set().union(*(o.names for o in parsed.observables)))
    obs_computed = []
    for eq in aux:
        obs_computed += _assignment(emit, eq, eq.target)
    for j, eq in enumerate(parsed.observables):
        obs_computed += _assignment(emit, eq, eq.target) + [f"out[{j}] = {eq.target}"]
    obs_body = _unpack(parsed, aux + list(parsed.observables)) + obs_computed
    obs_lane_body = _unpack(parsed, aux + list(parsed.observables), lane=True) + obs_computed
    # last, so the functions above keep their literals' names
    jacobian_lines = jacobian_functions(parsed, emit, jacobian)

    numbers = [(c, float(constants[c])) for c in parsed.constant_names
               if c in emit.used_globals]
    numbers += [("pi", math.pi)] if "pi" in emit.used_globals else []
    n_constants = len(numbers)
    numbers += list(emit.literals.values())
    for k, (label, value) in enumerate(numbers):
        with np.errstate(over="ignore"):
            if not np.isfinite(dtype.type(value)):
                what = f"constant {label!r} = {value!r}" if k < n_constants else (
                    f"number {value!r}")
                raise ValueError(f"system {name!r}: {what} overflows {dtype.name}")
    assigned = [f"{label} = np.{dtype.name}({value!r})" for label, value in numbers]

    lines = [
        f"# Generated by cubie_kernel.systems for ODESystem {name!r}, "
        f"precision {dtype.name}.",
        f"# Every number is a {dtype.name} scalar, so no operation widens silently.",
        "import math", "", "import numpy as np", "", "",
    ]
    if n_constants:
        lines += ["# constants", *assigned[:n_constants], ""]
    if len(numbers) > n_constants:
        lines += ["# numeric literals", *assigned[n_constants:], ""]
    lines += [""] if numbers else []
    lines += _function("dxdt(state, parameters, t, out)",
                       "out[i] = d(state[i])/dt for states "
                       + ", ".join(parsed.state_names), dxdt_body)
    lines += _function("observables(state, parameters, t, out)",
                       "out[j] = observable j: "
                       + (", ".join(parsed.observable_names) or "(none)"), obs_body)
    lines += _function("dxdt_lane(state, parameters, t, out, _j, _lanes)",
                       "dxdt for lane _j of lane-form arrays (element i at i * _lanes + _j)",
                       dxdt_lane_body)
    lines += _function("observables_lane(state, parameters, t, out, _j, _lanes)",
                       "observables of lane _j of lane-form state and parameters; "
                       "out is 1-D", obs_lane_body)
    arguments = ", ".join(("t",) + parsed.state_names + parsed.parameter_names)
    lines += _function(f"dxdt_values({arguments})",
                       "the derivatives as a tuple, from scalars", dxdt_values_body)
    lines += jacobian_lines
    return "\n".join(lines).rstrip() + "\n"


#: The functions :func:`generate_source` defines, in order.
GENERATED_FUNCTIONS = ("dxdt", "observables", "dxdt_lane", "observables_lane", "dxdt_values",
                       "jacobian_lane", "time_derivative_lane")


def compile_functions(source: str, label: str) -> dict[str, Callable]:
    """Import generated ``source`` as a module; return its functions by name.

    The module is a file in the kernel cache folder (see
    :func:`cubie_kernel.kernel_cache.import_source`), so tracebacks and
    numba's messages show the source, and kernels that call these functions
    can be cached on disk. Only call this with text from
    :func:`generate_source`; ``label`` is kept for messages.
    """
    from cubie_kernel import kernel_cache

    module = kernel_cache.import_source("system", source)
    return {name: getattr(module, name) for name in GENERATED_FUNCTIONS}
