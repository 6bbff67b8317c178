"""Compile-settings factories: the pattern every layer of the solver follows.

A factory owns a frozen attrs settings object and builds its compiled
device function lazily, on first read of :attr:`CompiledFactory.device_function`.
The compiled function is rebuilt only when something it was built from
really changed:

- one of its own settings (compared by value; functions by identity);
- the compiled function of a child factory (read at the point of use);
- the buffer registry's layout of its owner's subtree (``registry.version``).

Components read ``child.device_function`` inside ``build`` instead of
keeping it in their settings, so a rebuilt child is always picked up. The
one exception is the batch kernel, whose compile settings
(``BatchSolverConfig``) hold the run's ``loop_fn`` by design: it pulls the
current one from the run (``refresh()``) before every read of its own
``device_function``, so a rebuilt loop still rebuilds the kernel.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
import numpy as np


def _same(a: Any, b: Any) -> bool:
    """Value equality that copes with arrays and callables."""
    if a is b:
        return True
    if callable(a) or callable(b):
        return False
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


class CompiledFactory:
    """Base class: frozen settings in, a lazily built compiled function out.

    Subclasses implement :meth:`build` (return the compiled object) and may
    override :meth:`dependencies` (child factories whose compiled functions
    the build reads) and :attr:`registry` (whose layout the build reads).
    """

    def __init__(self, settings) -> None:
        if not attrs.has(type(settings)):
            raise TypeError("compile settings must be an attrs class instance")
        self._settings = settings
        self._compiled = None
        self._fingerprint: tuple | None = None
        self.build_count = 0

    # -------------------------------------------------------------- settings
    @property
    def compile_settings(self):
        """The frozen settings object (replace through :meth:`update_compile_settings`)."""
        return self._settings

    def update_compile_settings(
        self, updates: Mapping[str, Any] | None = None, silent: bool = False, **kwargs
    ) -> set[str]:
        """Change settings; return the keys this factory recognised.

        Parameters
        ----------
        updates, **kwargs
            Setting name -> new value (both forms are merged).
        silent
            If False, a key that is not a setting raises KeyError naming it.
            Routers pass True and collect the recognised keys.

        The compiled function is invalidated only when a value really
        changed; setting a field to its current value costs nothing.
        """
        updates = {**(updates or {}), **kwargs}
        fields = attrs.fields_dict(type(self._settings))
        recognised = {key for key in updates if key in fields}
        unknown = set(updates) - recognised
        if unknown and not silent:
            raise KeyError(
                f"{type(self).__name__} has no setting(s) {sorted(unknown)}; "
                f"valid settings: {sorted(fields)}"
            )
        changed = {
            key: updates[key]
            for key in recognised
            if not _same(getattr(self._settings, key), updates[key])
        }
        if changed:
            self._settings = attrs.evolve(self._settings, **changed)
            self.invalidate()
            self.settings_changed(set(changed))
        return recognised

    def settings_changed(self, changed: set[str]) -> None:
        """Hook after settings changed (e.g. re-register buffer sizes)."""

    # -------------------------------------------------------------- building
    def invalidate(self) -> None:
        """Drop the compiled function; the next read rebuilds it."""
        self._compiled = None
        self._fingerprint = None

    def dependencies(self) -> tuple["CompiledFactory", ...]:
        """Child factories whose compiled functions :meth:`build` reads."""
        return ()

    @property
    def registry(self):
        """The buffer registry whose layout :meth:`build` reads (or None)."""
        return None

    @property
    def registry_owner(self):
        """The owner whose subtree's layout :meth:`build` reads (itself by default)."""
        return self

    def _current_fingerprint(self) -> tuple:
        children = tuple(child.device_function for child in self.dependencies())
        registry = self.registry
        return children, (None if registry is None else registry.version(self.registry_owner))

    def build(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def device_function(self):
        """The compiled function, rebuilt if anything it depends on changed."""
        fingerprint = self._current_fingerprint()
        stale = self._fingerprint is None or len(fingerprint[0]) != len(self._fingerprint[0])
        stale = stale or fingerprint[1] != self._fingerprint[1]
        stale = stale or any(a is not b for a, b in zip(fingerprint[0], self._fingerprint[0]))
        if self._compiled is None or stale:
            self._compiled = self.build()
            self._fingerprint = self._current_fingerprint()
            self.build_count += 1
        return self._compiled
