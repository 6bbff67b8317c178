"""Analytic Jacobians of a system's equations, and their generated code.

Implicit and Rosenbrock methods need the Jacobian ``J[i][k] = d f_i / d x_k``
of the right-hand side (``f_i`` the derivative of state ``i``) and, for
non-autonomous systems, the partial time derivative ``d f_i / d t`` at fixed
state. This module computes both from the validated ASTs of a
:class:`~cubie_kernel.systems.equations.ParsedSystem` (no SymPy, no finite
differences) and generates two lane-form functions::

    def jacobian_lane(state, parameters, t, out, _j, _lanes): ...
    def time_derivative_lane(state, parameters, t, out, _j, _lanes): ...

Differentiation is forward mode, equation by equation, in definition order:
for each auxiliary ``a`` and each variable ``v`` (a state, or ``t``) it
depends on, directly or through earlier auxiliaries, the generated code holds
``d a / d v`` in a temporary (``_D<k>_a`` for state ``k``, ``_Dt_a`` for
time), and later equations use it through the chain rule, so nested
auxiliaries never expand into one large expression. Dependencies are tracked
and zeros and ones folded, so structurally-zero entries are never computed
(they are written as a precision zero) and no ``0*x``, ``x + 0`` or ``x*1``
appears. The derivative ASTs are turned into code by the same
:class:`~cubie_kernel.systems.equations._Emitter` as the equations, so every
literal is a precision scalar and float32 code stays float32.

Derivatives of the non-smooth constructs are the usual one-sided choices:
``a if cond else b`` differentiates both branches under the same condition;
``floor``/``ceil`` have derivative 0; ``abs``/``fabs`` give ``copysign(1, u)
* du``; ``min``/``max`` give the derivative of the argument they select
(ties select the first, as Python does); ``copysign(a, b)`` treats the sign
of ``b`` as constant.

A user-supplied Jacobian (:func:`parse_jacobian`) replaces the generated one
entirely, time derivative included.
"""

from __future__ import annotations

import ast
import math
from typing import Mapping, Sequence

import attrs

from cubie_kernel.systems.equations import (
    ParsedSystem,
    SystemDefinitionError,
    _Checker,
    _constant_value,
    _Emitter,
    _ExprError,
    _function,
    _needed,
    _unpack_names,
)

#: Up to this many Jacobian entries every entry is written on its own line
#: (zeros too); beyond it one loop zeroes ``out`` and only the structurally
#: non-zero entries follow, so the source grows with the non-zeros, not n**2.
MAX_EXPLICIT_ENTRIES = 64

#: The name of the time derivative's column in a user-supplied Jacobian.
TIME_COLUMN = "t"


@attrs.frozen
class JacobianEntry:
    """One validated entry of a user-supplied Jacobian.

    Attributes
    ----------
    row : str
        The state whose derivative is differentiated.
    column : str
        The state differentiated by, or ``"t"`` for the time derivative.
    text : str
        The user's expression, stripped.
    expr : ast.expr
        The validated expression.
    names : frozenset of str
        Every name the expression reads.
    """

    row: str
    column: str
    text: str
    expr: ast.expr = attrs.field(eq=False, repr=False)
    names: frozenset[str] = attrs.field(repr=False)


# ------------------------------------------------------------------ dependencies


def dependencies(parsed: ParsedSystem) -> tuple[dict[str, frozenset[str]],
                                                dict[str, frozenset[str]]]:
    """The states and time that each auxiliary and each derivative read.

    Returns
    -------
    auxiliaries : dict
        Auxiliary name -> the states (and ``"t"``) it depends on, directly or
        through earlier auxiliaries.
    derivatives : dict
        State name -> the same for that state's derivative. (Keyed apart from
        auxiliaries: a state may be named like another state's derivative.)
    """
    base = {s: frozenset({s}) for s in parsed.state_names}
    base["t"] = frozenset({"t"})
    auxiliaries: dict[str, frozenset[str]] = {}
    derivatives: dict[str, frozenset[str]] = {}
    for eq in parsed.equations:
        found = frozenset().union(
            *(base.get(n) or auxiliaries.get(n, frozenset()) for n in eq.names))
        if eq.kind == "derivative":
            derivatives[eq.state] = found
        else:
            auxiliaries[eq.target] = found
    return auxiliaries, derivatives


def is_autonomous(parsed: ParsedSystem) -> bool:
    """True when no derivative reads ``t``, directly or through auxiliaries."""
    _, derivatives = dependencies(parsed)
    return all("t" not in found for found in derivatives.values())


# ----------------------------------------------------- folding AST constructors
#
# A derivative is an AST, or None for a structural zero. These builders fold
# zeros and ones and pull unary minus outwards (exact in IEEE arithmetic:
# -(a*b) == (-a)*b, a - (-b) == a + b), so no '0*x', 'x + 0' or 'x*1' is built.


def _num(value: float) -> ast.Constant:
    return ast.Constant(float(value))


def _is(node: ast.expr | None, value: float) -> bool:
    return node is not None and _constant_value(node) == value


def _nonzero(node: ast.expr | None) -> ast.expr | None:
    return None if node is None or _is(node, 0.0) else node


def _negated(node: ast.expr) -> ast.expr | None:
    """The operand of a unary minus, else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return node.operand
    return None


def _neg(a: ast.expr | None) -> ast.expr | None:
    a = _nonzero(a)
    if a is None:
        return None
    inner = _negated(a)
    if inner is not None:
        return inner
    value = _constant_value(a)
    if value is not None:
        return _num(-value)
    return ast.UnaryOp(ast.USub(), a)


def _add(a: ast.expr | None, b: ast.expr | None) -> ast.expr | None:
    a, b = _nonzero(a), _nonzero(b)
    if a is None:
        return b
    if b is None:
        return a
    if _negated(b) is not None:
        return ast.BinOp(a, ast.Sub(), _negated(b))
    if _negated(a) is not None:
        return ast.BinOp(b, ast.Sub(), _negated(a))
    return ast.BinOp(a, ast.Add(), b)


def _sub(a: ast.expr | None, b: ast.expr | None) -> ast.expr | None:
    a, b = _nonzero(a), _nonzero(b)
    if b is None:
        return a
    if a is None:
        return _neg(b)
    if _negated(b) is not None:
        return _add(a, _negated(b))
    return ast.BinOp(a, ast.Sub(), b)


def _mul(a: ast.expr | None, b: ast.expr | None) -> ast.expr | None:
    a, b = _nonzero(a), _nonzero(b)
    if a is None or b is None:
        return None
    for one, other in ((a, b), (b, a)):
        if _is(one, 1.0):
            return other
        if _is(one, -1.0):
            return _neg(other)
    if _negated(a) is not None:
        return _neg(_mul(_negated(a), b))
    if _negated(b) is not None:
        return _neg(_mul(a, _negated(b)))
    return ast.BinOp(a, ast.Mult(), b)


def _div(a: ast.expr | None, b: ast.expr) -> ast.expr | None:
    a = _nonzero(a)
    if a is None:
        return None
    if _is(b, 1.0):
        return a
    if _negated(a) is not None:
        return _neg(_div(_negated(a), b))
    return ast.BinOp(a, ast.Div(), b)


def _pow(base: ast.expr, exponent: float | ast.expr) -> ast.expr:
    if not isinstance(exponent, ast.expr):
        if exponent == 1:
            return base
        exponent = _num(exponent)
    return ast.BinOp(base, ast.Pow(), exponent)


def _call(fname: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Name(fname, ast.Load()), list(args), [])


def _ifexp(test: ast.expr, body: ast.expr | None,
           orelse: ast.expr | None) -> ast.expr | None:
    body, orelse = _nonzero(body), _nonzero(orelse)
    if body is None and orelse is None:
        return None
    return ast.IfExp(test, _num(0.0) if body is None else body,
                     _num(0.0) if orelse is None else orelse)


# ---------------------------------------------------------------- differentiation


class _Differentiator:
    """Forward-mode derivatives of validated expressions.

    ``known`` maps ``(auxiliary, variable)`` to an expression for ``d
    auxiliary / d variable`` (a temporary's name, or a folded constant or
    name); missing pairs are zero. Variables are state names and ``"t"``.
    """

    def __init__(self, known: Mapping[tuple[str, str], ast.expr]):
        self.known = known

    def __call__(self, node: ast.expr, var: str,
                 value: ast.expr | None = None) -> ast.expr | None:
        """``d node / d var``, or None when structurally zero.

        ``value``: a name already holding ``node``'s value (the auxiliary an
        equation defines), reused where the derivative needs it.
        """
        value = node if value is None else value
        if _constant_value(node) is not None:
            return None
        if isinstance(node, ast.Name):
            if node.id == var:
                return _num(1.0)
            return self.known.get((node.id, var))
        if isinstance(node, ast.UnaryOp):  # numeric operands only: + and -
            d = self(node.operand, var)
            return _neg(d) if isinstance(node.op, ast.USub) else d
        if isinstance(node, ast.BinOp):
            return self._binop(node, var, value)
        if isinstance(node, ast.IfExp):
            return _ifexp(node.test, self(node.body, var), self(node.orelse, var))
        if isinstance(node, ast.Call):
            return self._call(node, var, value)
        raise AssertionError(f"unvalidated node {ast.dump(node)}")  # pragma: no cover

    def _binop(self, node: ast.BinOp, var: str, value: ast.expr) -> ast.expr | None:
        u, v = node.left, node.right
        if isinstance(node.op, ast.Pow):
            return self._power(u, v, var, value)
        du, dv = self(u, var), self(v, var)
        if isinstance(node.op, ast.Add):
            return _add(du, dv)
        if isinstance(node.op, ast.Sub):
            return _sub(du, dv)
        if isinstance(node.op, ast.Mult):
            return _add(_mul(du, v), _mul(u, dv))
        # u / v: (du - (u / v) * dv) / v, without squaring v
        return _div(_sub(du, _mul(ast.BinOp(u, ast.Div(), v), dv)), v)

    def _power(self, u: ast.expr, v: ast.expr, var: str,
               value: ast.expr) -> ast.expr | None:
        du, dv = self(u, var), self(v, var)
        n = _constant_value(v)
        if n is not None:
            if n == 0:
                return None
            # integer n - 1 stays a literal the emitter expands to products
            return _mul(_mul(_num(n), _pow(u, n - 1.0)), du)
        power_rule = _mul(_mul(v, _pow(u, ast.BinOp(v, ast.Sub(), _num(1.0)))), du)
        return _add(power_rule, _mul(_mul(_call("log", u), value), dv))

    def _call(self, node: ast.Call, var: str, value: ast.expr) -> ast.expr | None:
        fname, args = node.func.id, node.args
        if fname in ("floor", "ceil"):
            return None
        if fname == "pow":
            return self._power(args[0], args[1], var, value)
        if fname in ("min", "max"):
            return self._select(fname, args, var)
        if fname == "atan2":  # atan2(y, x): (x dy - y dx) / (x**2 + y**2)
            y, x = args
            numerator = _sub(_mul(x, self(y, var)), _mul(y, self(x, var)))
            return _div(numerator, ast.BinOp(_pow(x, 2.0), ast.Add(), _pow(y, 2.0)))
        if fname == "hypot":
            x, y = args
            return _div(_add(_mul(x, self(x, var)), _mul(y, self(y, var))), value)
        if fname == "copysign":  # |a| sign(b): the sign of b is piecewise constant
            a, b = args
            signs = ast.BinOp(_call("copysign", _num(1.0), a), ast.Mult(),
                              _call("copysign", _num(1.0), b))
            return _mul(signs, self(a, var))
        (u,) = args
        du = self(u, var)
        if du is None:
            return None
        one = _num(1.0)
        if fname in ("abs", "fabs"):
            return _mul(_call("copysign", one, u), du)
        if fname == "sin":
            return _mul(_call("cos", u), du)
        if fname == "cos":
            return _neg(_mul(_call("sin", u), du))
        if fname == "tan":
            return _div(du, _pow(_call("cos", u), 2.0))
        if fname in ("asin", "acos"):
            d = _div(du, _call("sqrt", ast.BinOp(one, ast.Sub(), _pow(u, 2.0))))
            return d if fname == "asin" else _neg(d)
        if fname == "atan":
            return _div(du, ast.BinOp(one, ast.Add(), _pow(u, 2.0)))
        if fname == "sinh":
            return _mul(_call("cosh", u), du)
        if fname == "cosh":
            return _mul(_call("sinh", u), du)
        if fname == "tanh":
            return _div(du, _pow(_call("cosh", u), 2.0))
        if fname == "asinh":
            return _div(du, _call("sqrt", ast.BinOp(_pow(u, 2.0), ast.Add(), one)))
        if fname == "acosh":  # sqrt((u - 1)(u + 1)): no cancellation near u = 1
            product = ast.BinOp(ast.BinOp(u, ast.Sub(), one), ast.Mult(),
                                ast.BinOp(u, ast.Add(), one))
            return _div(du, _call("sqrt", product))
        if fname == "atanh":
            return _div(du, ast.BinOp(one, ast.Sub(), _pow(u, 2.0)))
        if fname == "exp":
            return _mul(value, du)
        if fname == "expm1":
            return _mul(_call("exp", u), du)
        if fname == "log":
            return _div(du, u)
        if fname == "log1p":
            return _div(du, ast.BinOp(one, ast.Add(), u))
        if fname in ("log2", "log10"):
            ln_base = math.log(2.0 if fname == "log2" else 10.0)
            return _div(du, ast.BinOp(u, ast.Mult(), _num(ln_base)))
        if fname == "sqrt":
            return _div(du, ast.BinOp(_num(2.0), ast.Mult(), value))
        if fname in ("erf", "erfc"):
            gauss = _call("exp", ast.UnaryOp(ast.USub(), _pow(u, 2.0)))
            d = _mul(_mul(_num(2.0 / math.sqrt(math.pi)), gauss), du)
            return d if fname == "erf" else _neg(d)
        raise AssertionError(f"no derivative rule for {fname!r}")  # pragma: no cover

    def _select(self, fname: str, args: Sequence[ast.expr], var: str) -> ast.expr | None:
        """The derivative of the argument ``min``/``max`` selects.

        Python (and numba) keep the running choice unless a later argument
        is strictly smaller (larger), so ties select the earlier argument.
        """
        keep = ast.LtE() if fname == "min" else ast.GtE()
        chosen: ast.expr = args[0]
        d = self(args[0], var)
        for k in range(1, len(args)):
            test = ast.Compare(chosen, [keep], [args[k]])
            d = _ifexp(test, d, self(args[k], var))
            chosen = _call(fname, *args[:k + 1])
        return d


# ------------------------------------------------------------------ generated code


@attrs.frozen
class _Line:
    """``target = expr`` in a generated body, under the comment ``note``."""

    target: str
    expr: ast.expr
    note: str


def _names(node: ast.expr) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _variable_label(parsed: ParsedSystem, var: str) -> str:
    return "t" if var == "t" else str(parsed.state_names.index(var))


def _forward(parsed: ParsedSystem, variables: Sequence[str]
             ) -> tuple[list[_Line], dict[tuple[str, str], ast.expr]]:
    """Forward-mode derivatives of every derivative equation by ``variables``.

    Returns the lines computing the auxiliaries and their derivatives (in
    definition order, before pruning) and ``(state, variable) -> d f_state /
    d variable`` for the structurally non-zero entries.
    """
    aux_deps, derivative_deps = dependencies(parsed)
    derivatives = [eq for eq in parsed.equations if eq.kind == "derivative"]
    auxiliaries = _needed(parsed.equations, set().union(*(d.names for d in derivatives)))
    known: dict[tuple[str, str], ast.expr] = {}
    diff = _Differentiator(known)
    lines: list[_Line] = []
    for eq in auxiliaries:
        note = f"{eq.target} = {ast.unparse(eq.expr)}"
        lines.append(_Line(eq.target, eq.expr, note))
        for var in variables:
            if var not in aux_deps[eq.target]:
                continue
            d = diff(eq.expr, var, value=ast.Name(eq.target, ast.Load()))
            if d is None:
                continue
            if isinstance(d, ast.Name) or _constant_value(d) is not None:
                known[(eq.target, var)] = d  # fold: no temporary for a name or number
                continue
            temp = f"_D{_variable_label(parsed, var)}_{eq.target}"
            lines.append(_Line(temp, d, note))
            known[(eq.target, var)] = ast.Name(temp, ast.Load())
    entries: dict[tuple[str, str], ast.expr] = {}
    for eq in derivatives:
        for var in variables:
            if var in derivative_deps[eq.state]:
                d = diff(eq.expr, var)
                if d is not None:
                    entries[(eq.state, var)] = d
    return lines, entries


def _supplied(parsed: ParsedSystem, jacobian: Sequence[JacobianEntry], time: bool
              ) -> tuple[list[_Line], dict[tuple[str, str], ast.expr]]:
    """The user's entries (time column, or state columns) and the auxiliaries
    they read."""
    chosen = [e for e in jacobian if (e.column == TIME_COLUMN) == time]
    auxiliaries = _needed(parsed.equations, set().union(set(), *(e.names for e in chosen)))
    lines = [_Line(eq.target, eq.expr, f"{eq.target} = {ast.unparse(eq.expr)}")
             for eq in auxiliaries]
    return lines, {(e.row, e.column): e.expr for e in chosen}


def _body(parsed: ParsedSystem, emit: _Emitter, lines: Sequence[_Line],
          stores: Sequence[tuple[int, ast.expr | None, str]], size: int) -> list[str]:
    """Unpack, compute the lines the stores need, and store.

    ``stores`` are ``(index, expression or None for zero, note)``; ``size``
    is the length of ``out`` per lane.
    """
    needed = set().union(set(), *(_names(e) for _, e, _ in stores if e is not None))
    kept = []
    for line in reversed(lines):
        if line.target in needed:
            needed |= _names(line.expr)
            kept.append(line)
    body = _unpack_names(parsed, needed, lane=True)
    note = None
    for line in reversed(kept):
        if line.note != note:
            note = line.note
            body.append(f"# {note}")
        pre: list[str] = []
        text = emit.statement_expr(line.expr, pre)
        body += pre + [f"{line.target} = {text}"]
    explicit = size <= MAX_EXPLICIT_ENTRIES
    if not explicit:
        zero = ast.unparse(emit.literal(0.0))
        body += ["# structural zeros", f"for _m in range({size}):",
                 f"    out[_m * _lanes + _j] = {zero}"]
    note = None
    for index, expr, store_note in stores:
        if expr is None and not explicit:
            continue
        if store_note != note:
            note = store_note
            body.append(f"# {note}")
        pre = []
        if expr is None:
            text = ast.unparse(emit.literal(0.0))
        else:
            text = emit.statement_expr(expr, pre)
        body += pre + [f"out[{index} * _lanes + _j] = {text}"]
    return body


def jacobian_functions(parsed: ParsedSystem, emit: _Emitter,
                       jacobian: Sequence[JacobianEntry] | None = None) -> list[str]:
    """Source lines defining ``jacobian_lane`` and ``time_derivative_lane``.

    Parameters
    ----------
    parsed
        The validated system.
    emit
        The emitter of the module the functions go into (its literals and
        constants are defined there).
    jacobian
        User-supplied entries (see :func:`parse_jacobian`); when given they
        replace the derivatives of the equations, and entries not given are
        zero.

    Returns
    -------
    list of str
        Source lines; both functions unpack every state and parameter they
        read before writing ``out``.
    """
    states = parsed.state_names
    n = len(states)
    index = {s: i for i, s in enumerate(states)}
    texts = {eq.state: ast.unparse(eq.expr) for eq in parsed.equations
             if eq.kind == "derivative"}
    if jacobian is None:
        j_lines, j_entries = _forward(parsed, states)
        t_lines, t_entries = _forward(parsed, (TIME_COLUMN,))
        origin = "d{} = {}"
    else:
        j_lines, j_entries = _supplied(parsed, jacobian, time=False)
        t_lines, t_entries = _supplied(parsed, jacobian, time=True)
        origin = "d{} (supplied Jacobian; equation: {})"
    j_stores = [(index[row] * n + k, j_entries.get((row, col)),
                 f"row {index[row]}: " + origin.format(row, texts[row]))
                for row in states for k, col in enumerate(states)]
    t_stores = [(index[row], t_entries.get((row, TIME_COLUMN)),
                 origin.format(row, texts[row])) for row in states]
    lines = _function(
        "jacobian_lane(state, parameters, t, out, _j, _lanes)",
        "J[i][k] = d(f_i)/d(state k) into lane-form out (entry i * n + k); "
        "states " + ", ".join(states),
        _body(parsed, emit, j_lines, j_stores, n * n))
    lines += _function(
        "time_derivative_lane(state, parameters, t, out, _j, _lanes)",
        "out[i] = d(f_i)/dt at fixed state, lane form",
        _body(parsed, emit, t_lines, t_stores, n))
    return lines


# ------------------------------------------------------------ user-supplied Jacobian


def parse_jacobian(parsed: ParsedSystem, jacobian: object,
                   ) -> tuple[JacobianEntry, ...] | None:
    """Validate a user-supplied Jacobian.

    Parameters
    ----------
    parsed
        The validated system the Jacobian belongs to.
    jacobian
        ``None``, or a mapping ``row state -> {column: expression}`` where a
        column is a state name or ``"t"`` (the partial time derivative).
        Expressions may use states, parameters, constants, ``t``, ``pi`` and
        the auxiliaries the equations define.

    Returns
    -------
    tuple of JacobianEntry or None
        The entries in canonical order (rows and columns in state order,
        ``"t"`` last), so equal Jacobians give equal tuples.

    Raises
    ------
    SystemDefinitionError
        Naming the bad row, column or expression.
    """
    if jacobian is None:
        return None
    if not isinstance(jacobian, Mapping):
        raise SystemDefinitionError(
            "jacobian must be a mapping of state -> {column: expression string}, "
            f"got {type(jacobian).__name__}")
    states = parsed.state_names
    columns = (*states, TIME_COLUMN)
    auxiliaries = {eq.target for eq in parsed.equations if eq.kind == "auxiliary"}
    scope = (set(states) | set(parsed.parameter_names) | set(parsed.constant_names)
             | {"t", "pi"} | auxiliaries)
    hints = {f"d{s}": " (derivatives cannot be used in the jacobian)" for s in states}
    hints.update({o: f" ({o!r} is an observable; observables cannot be used in the "
                     "jacobian, auxiliaries can)" for o in parsed.observable_names})
    found = []
    for row, entries in jacobian.items():
        if row not in states:
            raise SystemDefinitionError(
                f"jacobian: unknown row {row!r}; rows are states: "
                f"{', '.join(map(repr, states))}")
        if not isinstance(entries, Mapping):
            raise SystemDefinitionError(
                f"jacobian[{row!r}] must be a mapping of column -> expression string, "
                f"got {type(entries).__name__}")
        for column, text in entries.items():
            if column not in columns:
                raise SystemDefinitionError(
                    f"jacobian[{row!r}]: unknown column {column!r}; allowed: "
                    f"{', '.join(map(repr, columns))} ('t' is the time derivative)")
            if not isinstance(text, str) or not text.strip():
                raise SystemDefinitionError(
                    f"jacobian[{row!r}][{column!r}] must be a non-empty expression "
                    f"string, got {text!r}")
            text = text.strip()
            try:
                try:
                    expr = ast.parse(text, mode="eval").body
                except SyntaxError as exc:
                    raise _ExprError(f"syntax error: {exc.msg}") from None
                checker = _Checker(scope, hints)
                checker.numeric(expr)
            except _ExprError as exc:
                raise SystemDefinitionError(
                    f"jacobian[{row!r}][{column!r}] {text!r}: {exc}") from None
            found.append(JacobianEntry(row, column, text, expr, frozenset(checker.used)))
    found.sort(key=lambda e: (states.index(e.row), columns.index(e.column)))
    return tuple(found)


def jacobian_to_dict(entries: Sequence[JacobianEntry]) -> dict[str, dict[str, str]]:
    """``{row: {column: expression}}``, the plain-data form of ``entries``."""
    out: dict[str, dict[str, str]] = {}
    for e in entries:
        out.setdefault(e.row, {})[e.column] = e.text
    return out
