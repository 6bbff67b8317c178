"""Chunk tasks: pure functions of (spec, sweep, run range, fixed inputs, times).

:func:`run_chunk` builds its chunk's inputs from the sweep on the worker
(``sweep.inputs(start, stop)`` plus the fixed values, ``grid="verbatim"``),
integrates them with the worker's cached Solver and returns an
``xarray.Dataset`` whose ``run`` coordinate holds GLOBAL run indices. Same
arguments, same numbers: a lost chunk is simply run again. The worker
trusts the chunk's size (planned on the client) and launches it whole.
:func:`store_chunk` runs a chunk and writes it into a Zarr store's region
on the worker, returning only the chunk's small summary.

:func:`submit_chunk` gives each task a deterministic key, ``retries`` and,
on clusters whose workers advertise GPUs, ``resources={"GPU": 1}``. The
spec and sweep arrive as futures of data scattered once to every worker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from distributed import Client, Future

from cubie_kernel import targets

from cubie_dist.inputs import RunInputs, chunk_inputs, coordinate_name
from cubie_dist.chunks import Chunk
from cubie_dist.layout import SweepLayout
from cubie_dist.spec import SolverSpec
from cubie_dist.sweep import Sweep
from cubie_dist.worker import current_plugin
from cubie_dist.zarr_store import ZarrStore

#: Prefix of every chunk task key.
KEY_PREFIX = "cubie-chunk"


def run_chunk(
    spec: SolverSpec,
    sweep: Sweep,
    start: int,
    stop: int,
    inputs: RunInputs,
    duration: float,
    t0: float = 0.0,
    warmup: float = 0.0,
) -> xr.Dataset:
    """Integrate runs ``[start, stop)`` of ``sweep`` on this worker.

    Parameters
    ----------
    spec
        The solver spec; ``target="auto"`` resolves here, per worker.
    sweep
        The whole sweep; only rows ``[start, stop)`` are materialised.
    start, stop
        Global run range of the chunk.
    inputs
        Swept-name roles and fixed values (:func:`cubie_dist.inputs.resolve_inputs`).
    duration, t0, warmup
        As in :meth:`cubie_kernel.Solver.solve`.

    Returns
    -------
    xarray.Dataset
        The kernel's batch Dataset with ``run = start..stop-1`` and only the
        swept inputs as coordinates.
    """
    target = targets.resolve_target(spec.target)
    initial_values, parameters = chunk_inputs(sweep, inputs, start, stop)
    solve_args = dict(
        initial_values=initial_values,
        parameters=parameters,
        duration=duration,
        t0=t0,
        warmup=warmup,
        grid="verbatim",
        max_launch_runs=stop - start,
    )
    plugin = current_plugin()
    if plugin is not None:
        result = plugin.solve(spec, target, **solve_args)
    else:  # outside a worker, or a cluster without the plugin
        result = spec.build_solver(target).solve(**solve_args)
    swept = {coordinate_name(spec.system, name) for name in sweep.names}
    fixed = [
        name for name, coord in result.coords.items()
        if coord.dims == ("run",) and name != "run" and name not in swept
    ]
    run = result["run"]
    return result.drop_vars(fixed).assign_coords(
        run=("run", np.arange(start, stop, dtype=np.int64), run.attrs)
    )


def store_chunk(
    spec: SolverSpec,
    layout: SweepLayout,
    index: int,
    store: ZarrStore,
    inputs: RunInputs,
    duration: float,
    t0: float = 0.0,
    warmup: float = 0.0,
) -> dict[str, Any]:
    """Integrate chunk ``index`` of ``layout.plan`` and write it into ``store`` here.

    Returns
    -------
    dict
        The chunk's summary (:func:`cubie_dist.zarr_store.chunk_summary`),
        returned after its marker is written.
    """
    chunk = layout.plan.chunks[index]
    ds = run_chunk(spec, layout.sweep, chunk.start, chunk.stop, inputs, duration, t0, warmup)
    return store.write_chunk(layout, chunk, ds)


def call_token(
    spec: SolverSpec,
    sweep: Sweep,
    inputs: RunInputs,
    duration: float,
    t0: float,
    warmup: float,
    blocks: tuple[int, ...],
) -> str:
    """Digest of everything besides the chunk index that decides a chunk's result."""
    text = json.dumps(
        {
            "spec": spec.token(),
            "sweep": sweep.token(),
            "states": inputs.swept_states,
            "parameters": inputs.swept_parameters,
            "fixed_initial_values": {k: v.hex() for k, v in inputs.fixed_initial_values.items()},
            "fixed_parameters": {k: v.hex() for k, v in inputs.fixed_parameters.items()},
            "times": [float(duration).hex(), float(t0).hex(), float(warmup).hex()],
            "blocks": list(blocks),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def task_resources(advertised: Iterable[Mapping[str, float]]) -> dict[str, int] | None:
    """``{"GPU": 1}`` if any worker advertises a ``GPU`` resource, else None.

    Parameters
    ----------
    advertised
        Each worker's resources, e.g. ``WorkerInfo.resources``.

    Notes
    -----
    Requested, the resource keeps one chunk per GPU at a time and keeps
    chunks off workers without one: in a mixed cluster the cpu-only workers
    get no chunks.
    """
    return {"GPU": 1} if any(r.get("GPU") for r in advertised) else None


def key_name(spec_token: str, sweep_token: str, call: str) -> str:
    """``"cubie-chunk-<spec>-<sweep>-<call>"``; chunk ``j``'s key is ``(name, j)``.

    Built from the spec token, the sweep token and :func:`call_token`
    (prefixes of each), so equal work gets equal keys in any process.
    """
    return f"{KEY_PREFIX}-{spec_token[:16]}-{sweep_token[:16]}-{call[:12]}"


def submit_chunk(
    client: Client,
    chunk: Chunk,
    spec_future: Future,
    layout_future: Future,
    key_name: str,
    args: tuple[Any, ...],
    retries: int,
    resources: dict[str, int] | None,
    store: ZarrStore | None = None,
) -> Future:
    """Submit ``chunk``'s task under key ``(key_name, chunk.index)``.

    Without ``store``: :func:`run_chunk`, whose result is the chunk's
    Dataset. With it: :func:`store_chunk`, which writes on the worker and
    returns a summary. ``args`` are ``(inputs, duration, t0, warmup)``.
    """
    options = dict(key=(key_name, chunk.index), retries=retries, resources=resources, pure=True)
    if store is not None:
        return client.submit(
            store_chunk, spec_future, layout_future, chunk.index, store, *args, **options
        )
    return client.submit(
        _run_layout_chunk, spec_future, layout_future, chunk.index, *args, **options
    )


def _run_layout_chunk(spec: SolverSpec, layout: SweepLayout, index: int, *args: Any) -> xr.Dataset:
    chunk = layout.plan.chunks[index]
    return run_chunk(spec, layout.sweep, chunk.start, chunk.stop, *args)
