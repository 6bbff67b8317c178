"""``SolverSpec``: what to compile, as a small picklable value.

A spec is an :class:`~cubie_kernel.systems.ODESystem` plus the keyword
settings handed VERBATIM to :class:`cubie_kernel.Solver` on each worker.
Nothing here lists the settings the Solver accepts: the client builds
``Solver(system, target="cpu", **settings)`` once when the spec is made,
and whatever that rejects (ValueError/KeyError naming the setting) is
rejected before anything reaches a cluster.

``target`` stays in the settings as given (default ``"auto"``) and is
resolved per worker: ``"auto"`` means cuda on a worker that sees a GPU,
cpu otherwise.

The token (:meth:`SolverSpec.token`) is the SHA-256 of the system's
process-independent digest and the sorted, canonicalised settings: the
key of every worker's kernel cache and part of every chunk's task key.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from typing import Any, Mapping

import numpy as np

from cubie_kernel import Solver, targets
from cubie_kernel.outputs import Output
from cubie_kernel.buffers import BufferRegistry
from cubie_kernel.systems import ODESystem
from cubie_kernel.systems.events import as_events

_TOKEN_VERSION = "cubie_dist.SolverSpec/1"

#: Solver keywords a spec may not carry: the worker owns them.
RESERVED_SETTINGS = ("registry",)


def canonical_value(value: Any, field: str) -> Any:
    """A JSON-able, process-independent form of one setting value.

    Numbers stay numbers (numpy scalars become Python ones), numpy float
    types and dtypes become their names (``np.float64`` -> ``"float64"``, the
    same as the string the Solver also accepts), sequences and arrays become
    lists, mappings sorted dicts.

    Raises
    ------
    TypeError
        For a value with no stable representation; the message names ``field``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "canonical"):  # e.g. cubie_kernel.Output
        return canonical_value(value.canonical(), field)
    if isinstance(value, np.generic):
        return canonical_value(value.item(), field)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, np.ndarray):
        return [canonical_value(v, field) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [canonical_value(v, f"{field}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): canonical_value(v, f"{field}[{k!r}]") for k, v in sorted(value.items())}
    raise TypeError(
        f"solver setting {field} = {value!r} ({type(value).__name__}) has no stable "
        "representation; use numbers, strings, bools, None, numpy float types or "
        "lists of those"
    )


class SolverSpec:
    """An ODE system and the Solver settings to integrate it with.

    Parameters
    ----------
    system
        The :class:`~cubie_kernel.systems.ODESystem`.
    **settings
        Keyword settings passed verbatim to ``cubie_kernel.Solver(system,
        **settings)`` on each worker (``method``, ``dt``, ``save_every``,
        ``precision``, tolerances, buffer locations, ...). ``target``
        defaults to ``"auto"``: cuda on GPU workers, cpu elsewhere.

    Raises
    ------
    TypeError
        ``system`` is not an ODESystem, or a setting value has no stable
        representation.
    ValueError, KeyError
        A setting the Solver rejects (raised by building ``Solver(system,
        target="cpu", **settings)`` here, on the client), a reserved setting
        (``registry``: each worker owns its registries) or a bad ``target``.

    Notes
    -----
    Immutable, picklable (as the system plus the settings; unpickling does
    not validate again), equal and hashable by :meth:`token`.
    """

    __slots__ = ("_system", "_settings", "_token", "_validator")

    def __init__(self, system: ODESystem, /, **settings: Any) -> None:
        if not isinstance(system, ODESystem):
            raise TypeError(f"system must be a cubie_kernel ODESystem, got {type(system).__name__}")
        for name in RESERVED_SETTINGS:
            if name in settings:
                raise ValueError(
                    f"solver setting {name!r} is not allowed in a SolverSpec: each worker "
                    "keeps its own buffer registries (SolverPlugin)"
                )
        target = settings.get("target", "auto")
        if target not in targets.TARGET_CHOICES:
            raise ValueError(
                f"solver setting 'target' must be one of {targets.TARGET_CHOICES}, got {target!r}"
            )
        if settings.get("output") is not None:  # an Output and its mapping: one token
            try:
                settings["output"] = Output.from_dict(settings["output"])
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"invalid solver settings for system {system.name!r}: {err}"
                ) from err
        if settings.get("events") is not None:  # Events and their mappings: one token
            try:
                settings["events"] = as_events(settings["events"])
            except ValueError as err:
                raise type(err)(
                    f"invalid solver settings for system {system.name!r}: {err}"
                ) from err
        canonical = {k: canonical_value(v, repr(k)) for k, v in sorted(settings.items())}
        try:
            validator = Solver(system, **{**settings, "target": "cpu"})
        except (ValueError, KeyError) as err:
            message = err.args[0] if err.args else str(err)
            raise type(err)(f"invalid solver settings for system {system.name!r}: {message}") from err
        self._init(system, settings, _token(system, canonical), validator)

    def _init(self, system, settings, token, validator) -> None:
        object.__setattr__(self, "_system", system)
        object.__setattr__(self, "_settings", tuple(sorted(settings.items())))
        object.__setattr__(self, "_token", token)
        object.__setattr__(self, "_validator", validator)

    # ------------------------------------------------------------ value semantics
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"SolverSpec is immutable (cannot set {name!r})")

    def __reduce__(self):
        return (_restore, (self._system, dict(self._settings), self._token))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SolverSpec):
            return NotImplemented
        return self._token == other._token

    def __hash__(self) -> int:
        return hash(self._token)

    def __dask_tokenize__(self) -> str:
        return self._token

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self._settings)
        return f"SolverSpec({self._system.name!r}, {settings})"

    # --------------------------------------------------------------------- access
    @property
    def system(self) -> ODESystem:
        """The ODE system."""
        return self._system

    @property
    def settings(self) -> dict[str, Any]:
        """The Solver settings as given (a copy)."""
        return dict(self._settings)

    @property
    def target(self) -> str:
        """The requested target: ``"auto"`` (default), ``"cpu"`` or ``"cuda"``."""
        return self.settings.get("target", "auto")

    def token(self) -> str:
        """SHA-256 hex digest of (system digest, sorted canonical settings).

        Stable across processes and machines: equal specs, equal tokens.
        """
        return self._token

    def canonical_settings(self) -> dict[str, Any]:
        """The settings in their canonical, JSON-able form (sorted by name)."""
        return {k: canonical_value(v, repr(k)) for k, v in self._settings}

    # ------------------------------------------------------------------- solvers
    def build_solver(self, target: str, registry: BufferRegistry | None = None) -> Solver:
        """A fresh ``Solver(system, **settings)`` for a concrete ``target``.

        Parameters
        ----------
        target
            ``"cpu"`` or ``"cuda"`` (replaces the spec's ``target`` setting).
        registry
            The buffer registry of the new solver stack; a fresh one if None.
        """
        targets.check_target_name(target)
        return Solver(self._system, registry=registry, **{**self.settings, "target": target})

    def _client_solver(self) -> Solver:
        """The cpu Solver built on the client (validation, sizes, layout); never compiled."""
        validator = self._validator
        if validator is None:
            validator = self.build_solver("cpu")
            object.__setattr__(self, "_validator", validator)
        return validator

    def empty_result(
        self, duration: float, t0: float = 0.0, warmup: float = 0.0, swept: tuple[str, ...] = ()
    ):
        """The zero-run result of this spec (:meth:`cubie_kernel.Solver.empty_result`)."""
        return self._client_solver().empty_result(duration, t0, warmup, swept)

    def per_run_bytes(self, duration: float) -> int:
        """Device bytes one run needs for ``duration``, from the kernel itself.

        Read from ``Solver(...).kernel.per_run_device_bytes(duration)`` of the
        spec's own settings (inputs + outputs + registry scratch, which the
        registry counts the same way on every target).
        """
        return int(self._client_solver().kernel.per_run_device_bytes(duration))


def _token(system: ODESystem, canonical: Mapping[str, Any]) -> str:
    text = json.dumps(
        {"version": _TOKEN_VERSION, "system": system.digest, "settings": canonical},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _restore(system: ODESystem, settings: dict[str, Any], token: str) -> SolverSpec:
    """Unpickle a spec without validating it again (the client did)."""
    spec = SolverSpec.__new__(SolverSpec)
    spec._init(system, settings, token, None)
    return spec
