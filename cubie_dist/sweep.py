"""Sweeps: which runs to integrate, as arithmetic on run indices.

A :class:`Sweep` names its inputs and maps every run index ``i`` in
``[0, n_runs)`` to one float64 value per input. Nothing per run is stored:
grid inputs come from integer division over the axis lengths and sampled
inputs are hashed from ``(seed, input position, i)``. Describing and planning
a sweep of 10**9 runs therefore allocates nothing per run; only
:meth:`Sweep.inputs` allocates, and only for the runs it is asked for.

Kinds
-----
``grid``
    Cartesian product of 1-D axes in C order: the last axis varies fastest,
    as in ``itertools.product`` or ``np.meshgrid(..., indexing="ij")``.
``zip``
    Paired columns of equal length: run ``i`` takes element ``i`` of each.
``table``
    Explicit rows, from a mapping of equal-length columns or a DataFrame.
``sample``
    ``n`` pseudo-random points in a box, ``"uniform"`` or
    ``"latin_hypercube"``.

Sampling arithmetic
-------------------
Each (seed, input position, purpose) triple is hashed into a 64-bit stream
key. A uniform variate of run ``i`` is the SplitMix64 output
``mix64(key + (i + 1) * 0x9E3779B97F4A7C15)``, whose top 53 bits are scaled
into ``[0, 1)``. A Latin hypercube with ``n`` strata per input puts run ``i``
of input ``d`` in stratum ``perm_d(i)``, where ``perm_d`` is a keyed
permutation of ``[0, n)``: an 8-round Feistel network on the smallest even
number of bits covering ``n`` (round function ``mix64``), cycle-walked until
the result falls below ``n``. A uniform jitter places the point inside its
stratum. Run ``i``'s inputs thus depend only on ``(seed, d, i)``, never on
the chunk that computes them.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import numpy as np

#: The kinds of sweep, in the order :meth:`Sweep.from_dict` documents them.
KINDS = ("grid", "zip", "table", "sample")
#: Methods accepted by :meth:`Sweep.sample`.
SAMPLE_METHODS = ("uniform", "latin_hypercube")
#: Largest run count a sweep may have: run indices are int64 on every target.
INT64_MAX = 2**63 - 1

_TOKEN_VERSION = b"cubie_dist.Sweep/1"
_DICT_KEYS = {
    "grid": ("kind", "names", "axes"),
    "zip": ("kind", "names", "columns"),
    "table": ("kind", "names", "columns"),
    "sample": ("kind", "names", "n", "ranges", "method", "seed"),
}

# SplitMix64 (Steele, Lea & Flood 2014): golden-ratio increment, finaliser.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_FEISTEL_ROUNDS = 8
# Purposes that separate the streams drawn for one input.
_UNIFORM, _JITTER, _PERMUTE = 1, 2, 3


# --------------------------------------------------------------------------
# counter-based random numbers (uint64 arrays only: scalars warn on overflow)
# --------------------------------------------------------------------------
def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixing map of uint64 arrays."""
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def _stream_key(seed: int, dim: int, purpose: int) -> np.ndarray:
    """Hash ``(seed, dim, purpose)`` into a one-element uint64 key."""
    key = np.zeros(1, dtype=np.uint64)
    for word in (seed, dim, purpose):
        key = _mix64((key ^ np.array([word], dtype=np.uint64)) + _GAMMA)
    return key


def _uniform(key: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Uniform float64 variates in ``[0, 1)`` for uint64 run indices."""
    bits = _mix64(key + (index + np.uint64(1)) * _GAMMA)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _permute(index: np.ndarray, n: int, key: np.ndarray) -> np.ndarray:
    """Image of uint64 ``index`` (all < n) under a keyed permutation of [0, n).

    A Feistel network is a bijection of ``[0, 2**bits)`` whatever its round
    function; cycle-walking (re-applying it while the image is >= n) restricts
    a bijection of a superset to one of ``[0, n)``. ``2**bits < 4 n``, so a
    walk takes fewer than four rounds on average.
    """
    bits = max(2, (n - 1).bit_length())
    bits += bits % 2
    half = np.uint64(bits // 2)
    mask = np.uint64((1 << (bits // 2)) - 1)
    round_keys = _mix64(
        key + np.arange(1, _FEISTEL_ROUNDS + 1, dtype=np.uint64) * _GAMMA
    )

    def network(x: np.ndarray) -> np.ndarray:
        left, right = x >> half, x & mask
        for round_key in round_keys:
            left, right = right, left ^ (_mix64(right + round_key) & mask)
        return (left << half) | right

    limit = np.uint64(n)
    out = network(index)
    todo = np.flatnonzero(out >= limit)
    while todo.size:
        out[todo] = network(out[todo])
        todo = todo[out[todo] >= limit]
    return out


# --------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------
def _as_int(value: Any, field: str) -> int:
    """``operator.index(value)`` with an error naming ``field``; no bools."""
    if isinstance(value, bool):
        raise TypeError(f"{field} must be an int, got a bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{field} must be an int, got {value!r} ({type(value).__name__})"
        ) from None


def _check_names(names: tuple, field: str) -> None:
    """Names must be distinct, valid Python identifiers, and at least one."""
    if not names:
        raise ValueError(f"{field} needs at least one input name, got none")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"{field} name {name!r} must be a str, got {type(name).__name__}"
            )
        if not name.isidentifier():
            raise ValueError(
                f"{field} name {name!r} is not a valid Python identifier "
                "(letters, digits and underscores, not starting with a digit)"
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{field} names must be unique; repeated: {duplicates}")


def _as_column(value: Any, field: str) -> np.ndarray:
    """A finite, non-empty, 1-D, read-only float64 copy of ``value``."""
    if isinstance(value, (str, bytes)) or np.iscomplexobj(value):
        raise TypeError(f"{field} must hold real numbers, got {value!r}")
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{field} must hold real numbers ({err})") from None
    if array.ndim != 1:
        raise ValueError(
            f"{field} must be 1-D, got shape {array.shape}"
            + (" (a scalar: wrap it in a list)" if array.ndim == 0 else "")
        )
    if array.size == 0:
        raise ValueError(f"{field} is empty; it needs at least one value")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(
            f"{field} must be finite; element {bad[0]} is {float(array[bad[0]])!r} "
            f"({bad.size} non-finite value(s) in all)"
        )
    array += 0.0  # -0.0 -> 0.0, so equal values give equal tokens
    array.setflags(write=False)
    return array


def _as_bounds(name: str, pair: Any) -> tuple[float, float]:
    """``(lo, hi)`` of sample range ``name`` as two floats."""
    field = f"ranges[{name!r}]"
    try:
        lo, hi = pair
    except (TypeError, ValueError):
        raise TypeError(f"{field} must be a (lo, hi) pair, got {pair!r}") from None
    for value in (lo, hi):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{field} must hold real numbers, got {pair!r}")
    return (float(lo) + 0.0, float(hi) + 0.0)


def _ordered(spec: Mapping, key: str) -> dict:
    """``spec[key]`` as a dict in the order of ``spec["names"]`` if given.

    ``names`` keeps the axis order when a YAML writer sorts mapping keys.
    """
    mapping = spec[key]
    if not isinstance(mapping, Mapping):
        raise TypeError(f"sweep dict {key!r} must be a mapping, got {mapping!r}")
    names = spec.get("names")
    if names is None:
        return dict(mapping)
    if sorted(map(str, names)) != sorted(map(str, mapping)) or len(names) != len(
        mapping
    ):
        raise ValueError(
            f"sweep dict 'names' {list(names)} must list exactly the keys of "
            f"{key!r}: {list(mapping)}"
        )
    return {name: mapping[name] for name in names}


def _describe(values: np.ndarray) -> str:
    if values.size <= 4:
        return "[" + ", ".join(f"{v:g}" for v in values) + "]"
    return f"<{values.size} values in [{values.min():g}, {values.max():g}]>"


@attrs.frozen(eq=False, repr=False)
class Sweep:
    """The inputs of every run of a sweep, computed from run indices.

    Build one with :meth:`grid`, :meth:`zip`, :meth:`table`, :meth:`sample`
    or :meth:`from_dict`; calling ``Sweep(...)`` directly is internal.

    Attributes
    ----------
    kind
        One of :data:`KINDS`.
    names
        Input names in axis/column order.
    method, seed
        Sampling method and seed (``None`` unless ``kind == "sample"``).

    Notes
    -----
    A sweep is immutable (its arrays are read-only copies), picklable,
    compares by value, and has a stable :meth:`token`.
    """

    kind: str
    names: tuple[str, ...] = attrs.field(converter=tuple)
    _values: tuple[np.ndarray, ...] = ()
    _bounds: tuple[tuple[float, float], ...] = ()
    _n_samples: int = 0
    method: str | None = None
    seed: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        _check_names(self.names, f"{self.kind} sweep")
        if self.kind == "sample":
            self._check_sample()
            return
        if self._bounds or self._n_samples or (self.method, self.seed) != (None, None):
            raise ValueError(
                f"ranges, n_samples, method and seed belong to sample sweeps, "
                f"not to a {self.kind} sweep"
            )
        if len(self._values) != len(self.names) or not all(
            isinstance(v, np.ndarray) and v.dtype == np.float64 and v.ndim == 1
            and not v.flags.writeable
            for v in self._values
        ):
            raise TypeError(
                "Sweep values must be read-only 1-D float64 arrays, one per "
                "name; build sweeps with Sweep.grid/zip/table/sample"
            )
        lengths = {n: v.size for n, v in zip(self.names, self._values)}
        if self.kind == "grid":
            total = math.prod(lengths.values())
            if total > INT64_MAX:
                raise ValueError(
                    f"grid has {total} runs (axis lengths {lengths}), more than "
                    f"the int64 limit {INT64_MAX}; split the sweep"
                )
        elif len(set(lengths.values())) > 1:
            raise ValueError(
                f"{self.kind} columns must have equal lengths, got {lengths}"
            )

    def _check_sample(self) -> None:
        n = self._n_samples
        if type(n) is not int or not 0 < n <= INT64_MAX:
            raise ValueError(
                f"sample n must be an int in [1, {INT64_MAX}], got {n!r}"
            )
        if len(self._bounds) != len(self.names) or self._values:
            raise ValueError("a sample sweep has one (lo, hi) range per name, no values")
        for name, (lo, hi) in zip(self.names, self._bounds):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(
                    f"ranges[{name!r}] must be finite, got ({lo!r}, {hi!r})"
                )
            if not lo < hi:
                raise ValueError(
                    f"ranges[{name!r}] needs lo < hi, got ({lo!r}, {hi!r})"
                )
        if self.method not in SAMPLE_METHODS:
            raise ValueError(
                f"sample method must be one of {SAMPLE_METHODS}, got {self.method!r}"
            )
        if type(self.seed) is not int or not 0 <= self.seed < 2**64:
            raise ValueError(f"sample seed must be an int in [0, 2**64), got {self.seed!r}")

    # ------------------------------------------------------------------ build
    @classmethod
    def grid(cls, /, **axes: Any) -> Sweep:
        """Cartesian product of 1-D axes; the last keyword varies fastest.

        Parameters
        ----------
        **axes
            ``name=values``; keyword order is axis order.
        """
        names = tuple(axes)
        _check_names(names, "grid")
        values = tuple(_as_column(v, f"grid axis {n!r}") for n, v in axes.items())
        return cls(kind="grid", names=names, values=values)

    @classmethod
    def zip(cls, /, **columns: Any) -> Sweep:
        """Paired columns of equal length: run ``i`` takes element ``i`` of each."""
        return cls._from_columns("zip", list(columns.items()))

    @classmethod
    def table(cls, rows: Any) -> Sweep:
        """Explicit rows.

        Parameters
        ----------
        rows
            A mapping of name -> equal-length 1-D column, or a DataFrame-like
            object (anything with ``.columns`` and ``.to_numpy()``).
        """
        if hasattr(rows, "columns") and hasattr(rows, "to_numpy"):
            names = list(rows.columns)
            data = np.asarray(rows.to_numpy())
            if data.ndim != 2 or data.shape[1] != len(names):
                raise ValueError(
                    f"table rows.to_numpy() must have shape (n_rows, {len(names)}), "
                    f"got {data.shape}"
                )
            pairs = [(name, data[:, j]) for j, name in enumerate(names)]
        elif isinstance(rows, Mapping):
            pairs = list(rows.items())
        else:
            raise TypeError(
                "table rows must be a mapping of name -> 1-D column or a "
                f"DataFrame-like object with .columns and .to_numpy(), got "
                f"{type(rows).__name__}"
            )
        return cls._from_columns("table", pairs)

    @classmethod
    def _from_columns(cls, kind: str, pairs: list) -> Sweep:
        names = tuple(name for name, _ in pairs)
        _check_names(names, kind)
        values = tuple(_as_column(v, f"{kind} column {n!r}") for n, v in pairs)
        return cls(kind=kind, names=names, values=values)

    @classmethod
    def sample(
        cls,
        n: int,
        ranges: Mapping[str, tuple[float, float]],
        method: str = "uniform",
        seed: int = 0,
    ) -> Sweep:
        """``n`` pseudo-random points in the box ``ranges``.

        Parameters
        ----------
        n
            Number of runs, at least 1.
        ranges
            ``name -> (lo, hi)``; values fall in ``[lo, hi)``.
        method
            ``"uniform"``: independent uniform values. ``"latin_hypercube"``:
            each input's range is cut into ``n`` equal strata and every
            stratum holds exactly one run.
        seed
            Non-negative int below 2**64. Equal seeds give equal samples.
        """
        if not isinstance(ranges, Mapping):
            raise TypeError(
                f"sample ranges must be a mapping name -> (lo, hi), got {ranges!r}"
            )
        names = tuple(ranges)
        _check_names(names, "sample ranges")
        bounds = tuple(_as_bounds(name, pair) for name, pair in ranges.items())
        return cls(
            kind="sample",
            names=names,
            bounds=bounds,
            n_samples=_as_int(n, "sample n"),
            method=method,
            seed=_as_int(seed, "sample seed"),
        )

    # ------------------------------------------------------------- describe
    @property
    def n_runs(self) -> int:
        """Number of runs (a Python int)."""
        if self.kind == "sample":
            return self._n_samples
        if self.kind == "grid":
            return math.prod(v.size for v in self._values)
        return self._values[0].size

    @property
    def shape(self) -> tuple[int, ...]:
        """Axis lengths of a grid; ``(n_runs,)`` otherwise."""
        if self.kind == "grid":
            return tuple(v.size for v in self._values)
        return (self.n_runs,)

    @property
    def axes(self) -> dict[str, np.ndarray]:
        """Grid axes as ``name -> read-only float64 array``; ``{}`` otherwise."""
        if self.kind != "grid":
            return {}
        return dict(zip(self.names, self._values))

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """Sample box as ``name -> (lo, hi)``; ``{}`` otherwise."""
        return dict(zip(self.names, self._bounds))

    def __len__(self) -> int:
        return self.n_runs

    def check_names(self, allowed: Iterable[str], what: str) -> None:
        """Raise ValueError unless every input name is in ``allowed``.

        Parameters
        ----------
        allowed
            Names the consumer accepts, e.g. a system's parameters.
        what
            What ``allowed`` belongs to, for the message.
        """
        allowed = list(allowed)
        known = set(allowed)
        unknown = [name for name in self.names if name not in known]
        if unknown:
            raise ValueError(
                f"sweep input name(s) {unknown} are not in {what}; "
                f"allowed names: {allowed}"
            )

    # --------------------------------------------------------------- inputs
    def inputs(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Inputs of runs ``[start, stop)`` as ``name -> float64 array``.

        Parameters
        ----------
        start, stop
            Run index range, ``0 <= start <= stop <= n_runs``; ``stop=None``
            means ``n_runs``. Memory is proportional to ``stop - start``.
        """
        n_runs = self.n_runs
        start = _as_int(start, "start")
        stop = n_runs if stop is None else _as_int(stop, "stop")
        if not 0 <= start <= stop <= n_runs:
            raise ValueError(
                f"inputs(start, stop) needs 0 <= start <= stop <= n_runs={n_runs}, "
                f"got start={start}, stop={stop}"
            )
        if self.kind in ("zip", "table"):
            return {n: v[start:stop].copy() for n, v in zip(self.names, self._values)}
        index = np.arange(start, stop, dtype=np.int64)
        if self.kind == "grid":
            found = {}
            for name, axis in reversed(list(zip(self.names, self._values))):
                index, position = np.divmod(index, axis.size)
                found[name] = axis[position]
            return {name: found[name] for name in self.names}
        return self._sample(index.astype(np.uint64))

    def _sample(self, index: np.ndarray) -> dict[str, np.ndarray]:
        n = self._n_samples
        out = {}
        for dim, (name, (lo, hi)) in enumerate(zip(self.names, self._bounds)):
            if self.method == "uniform":
                unit = _uniform(_stream_key(self.seed, dim, _UNIFORM), index)
            else:
                stratum = _permute(index, n, _stream_key(self.seed, dim, _PERMUTE))
                jitter = _uniform(_stream_key(self.seed, dim, _JITTER), index)
                unit = (stratum.astype(np.float64) + jitter) / n
            # rounding may reach hi; keep the documented half-open range
            out[name] = np.minimum(lo + (hi - lo) * unit, np.nextafter(hi, lo))
        return out

    # ------------------------------------------------------------- identity
    def _spec(self, plain: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "names": list(self.names)}
        if self.kind == "sample":
            spec["n"] = self._n_samples
            spec["ranges"] = {n: list(b) for n, b in zip(self.names, self._bounds)}
            spec["method"] = self.method
            spec["seed"] = self.seed
            return spec
        key = "axes" if self.kind == "grid" else "columns"
        spec[key] = {
            name: (values.tolist() if plain else values)
            for name, values in zip(self.names, self._values)
        }
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The definition as plain data (str, int, float, list, dict).

        ``{"kind", "names", "axes"}`` for a grid, ``{"kind", "names",
        "columns"}`` for zip and table, ``{"kind", "names", "n", "ranges",
        "method", "seed"}`` for a sample. ``names`` fixes the input order.
        """
        return self._spec(plain=True)

    def describe(self) -> dict[str, Any]:
        """A small description for result attributes: kind, names, size, shape.

        A sample's is its whole definition (a few numbers); a grid's axes and
        a zip's or table's columns are left out: the result's coordinates
        hold those values already (:meth:`token` still tells sweeps apart).
        """
        if self.kind == "sample":
            return {**self.to_dict(), "n_runs": self.n_runs}
        return {"kind": self.kind, "names": list(self.names), "n_runs": self.n_runs,
                "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Sweep:
        """Rebuild (and re-validate) a sweep from :meth:`to_dict` output.

        ``names`` may be omitted, then mapping order is input order.
        """
        if not isinstance(spec, Mapping):
            raise TypeError(f"sweep dict must be a mapping, got {type(spec).__name__}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ValueError(f"sweep dict 'kind' must be one of {KINDS}, got {kind!r}")
        allowed = _DICT_KEYS[kind]
        unknown = sorted(set(spec) - set(allowed))
        if unknown:
            raise ValueError(
                f"sweep dict for kind {kind!r} has unknown key(s) {unknown}; "
                f"allowed keys: {list(allowed)}"
            )
        required = allowed[2:3] if kind != "sample" else ("n", "ranges")
        missing = [k for k in required if k not in spec]
        if missing:
            raise ValueError(f"sweep dict for kind {kind!r} is missing key(s) {missing}")
        if kind == "grid":
            return cls.grid(**_ordered(spec, "axes"))
        if kind == "zip":
            return cls.zip(**_ordered(spec, "columns"))
        if kind == "table":
            return cls.table(_ordered(spec, "columns"))
        return cls.sample(
            spec["n"],
            _ordered(spec, "ranges"),
            method=spec.get("method", "uniform"),
            seed=spec.get("seed", 0),
        )

    def __reduce__(self):
        # rebuild through the validating constructors (read-only arrays again)
        return (Sweep.from_dict, (self._spec(plain=False),))

    @functools.cached_property
    def _digest(self) -> str:
        h = hashlib.sha256()

        def feed(data: bytes) -> None:
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)

        feed(_TOKEN_VERSION)
        feed(self.kind.encode())
        for name in self.names:
            feed(name.encode())
        for values in self._values:
            feed(values.astype("<f8", copy=False).tobytes())
        for lo, hi in self._bounds:
            feed(f"{lo.hex()},{hi.hex()}".encode())
        if self.kind == "sample":
            feed(f"{self._n_samples},{self.method},{self.seed}".encode())
        return h.hexdigest()

    def token(self) -> str:
        """SHA-256 hex digest of the definition: equal sweeps, equal tokens.

        Independent of process and platform, so usable as a cache or task key.
        """
        return self._digest

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sweep):
            return NotImplemented
        return (
            (self.kind, self.names, self._bounds, self._n_samples, self.method, self.seed)
            == (other.kind, other.names, other._bounds, other._n_samples,
                other.method, other.seed)
            and all(np.array_equal(a, b) for a, b in zip(self._values, other._values))
        )

    def __hash__(self) -> int:
        return hash(self.token())

    def __repr__(self) -> str:
        if self.kind == "sample":
            box = ", ".join(f"{n!r}: ({lo:g}, {hi:g})" for n, (lo, hi) in self.ranges.items())
            parts = [str(self._n_samples), f"ranges={{{box}}}",
                     f"method={self.method!r}", f"seed={self.seed}"]
        else:
            parts = [f"{n}={_describe(v)}" for n, v in zip(self.names, self._values)]
        return f"Sweep.{self.kind}({', '.join(parts)})  # {self.n_runs} runs"
