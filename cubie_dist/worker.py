"""Per-worker state: the :class:`SolverPlugin` and its compiled-solver cache.

Each dask worker gets one plugin instance (``worker.plugins["cubie-solver"]``).
In :meth:`SolverPlugin.setup` it builds a small LRU cache of
:class:`cubie_kernel.Solver` objects keyed by ``(spec.token(), target)``,
so a worker compiles each spec once, however many chunks it runs; the cache
and its registries are dropped in :meth:`SolverPlugin.teardown`.

Registries
    Every cached solver stack gets its own :class:`~cubie_kernel.BufferRegistry`,
    created and owned by the plugin (never the process default), and
    dropped with its solver when the cache evicts it. Stacks sharing one
    registry would not recompile each other (a kernel's staleness check
    reads only its own subtree's version), but a registry per stack keeps
    each stack's buffer locations its own and lets eviction free them.

Concurrency
    Lookups are locked, so two threads missing on the same key build one
    solver. Solves on the cpu target are serialised per worker process: a
    cpu solve is already a parallel loop over all numba threads, and
    numba's ``workqueue`` threading layer aborts on concurrent launches.
    cuda solves are limited by the ``GPU`` resource instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from distributed import Client, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from cubie_kernel import BufferRegistry, Solver, targets

if TYPE_CHECKING:
    from cubie_dist.spec import SolverSpec

#: ``SolverPlugin.name``: the key in ``worker.plugins``.
PLUGIN_NAME = "cubie-solver"
#: Default number of compiled solvers kept per worker.
DEFAULT_CACHE_SIZE = 4


class SolverPlugin(WorkerPlugin):
    """A worker's compiled solvers, built once per spec and kept in an LRU cache.

    Parameters
    ----------
    cache_size
        Solvers kept per worker (least recently used evicted first).

    Attributes
    ----------
    compile_count
        Solvers this worker has built since setup (cache misses). Each one
        compiles its kernel on its first chunk, so this is the number of
        compiles.
    """

    name = PLUGIN_NAME
    #: Registering again (every ``run_sweep`` does) keeps the warm cache.
    idempotent = True

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"cache_size must be an int >= 1, got {cache_size!r}")
        self.cache_size = cache_size
        self._reset()

    def _reset(self) -> None:
        self.compile_count = 0
        self._cache: OrderedDict[tuple[str, str], Solver] = OrderedDict()
        self._registries: dict[tuple[str, str], BufferRegistry] = {}
        self._lock = threading.Lock()
        self._host_lock = threading.Lock()

    # pickled on the client, unpickled on each worker: no locks on the wire
    def __getstate__(self) -> dict[str, Any]:
        return {"cache_size": self.cache_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cache_size = state["cache_size"]
        self._reset()

    # ------------------------------------------------------------------ lifecycle
    def setup(self, worker=None) -> None:
        """Start with an empty cache and a zero compile count."""
        self._reset()

    def teardown(self, worker=None) -> None:
        """Drop every cached solver and its registry."""
        with self._lock:
            self._cache.clear()
            self._registries.clear()

    # ---------------------------------------------------------------------- cache
    @property
    def cached_keys(self) -> list[tuple[str, str]]:
        """``(spec token, target)`` of the cached solvers, least recent first."""
        with self._lock:
            return list(self._cache)

    def registry(self, key: tuple[str, str]) -> BufferRegistry:
        """The buffer registry of the cached solver stack ``key``."""
        with self._lock:
            return self._registries[key]

    def solver(self, spec: SolverSpec, target: str) -> Solver:
        """The cached Solver of ``spec`` on ``target``, built on a miss."""
        key = (spec.token(), target)
        with self._lock:
            solver = self._cache.get(key)
            if solver is not None:
                self._cache.move_to_end(key)
                return solver
            registry = BufferRegistry()
            solver = spec.build_solver(target, registry)
            self.compile_count += 1
            self._cache[key] = solver
            self._registries[key] = registry
            while len(self._cache) > self.cache_size:
                old, _ = self._cache.popitem(last=False)
                del self._registries[old]
            return solver

    def solve(self, spec: SolverSpec, target: str, **solve_args: Any):
        """``self.solver(spec, target).solve(**solve_args)``, one at a time on targets
        that use the host's cores."""
        solver = self.solver(spec, target)
        if targets.get_target(target).uses_host_cores:
            with self._host_lock:
                return solver.solve(**solve_args)
        return solver.solve(**solve_args)


def current_plugin() -> SolverPlugin | None:
    """This worker's SolverPlugin; None outside a worker or when unregistered."""
    try:
        worker = get_worker()
    except ValueError:
        return None
    plugin = worker.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, SolverPlugin) else None


def _compile_count(dask_worker) -> int:
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return plugin.compile_count if isinstance(plugin, SolverPlugin) else 0


def _has_spec(token: str, dask_worker=None) -> bool:
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    return isinstance(plugin, SolverPlugin) and any(k[0] == token for k in plugin.cached_keys)


def workers_to_compile(client: Client, spec: SolverSpec) -> int:
    """How many of the cluster's workers have not yet built ``spec`` (will compile it)."""
    return sum(not cached for cached in client.run(_has_spec, spec.token()).values())


def worker_compile_counts(client: Client) -> dict[str, int]:
    """Solvers built per worker: ``{worker address: compile count}``.

    Workers without the plugin report 0.
    """
    return client.run(_compile_count)
