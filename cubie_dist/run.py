"""``run_sweep``: integrate every run of a sweep on a dask cluster.

Order of work, so that bad input never reaches a cluster and a failed call
changes nothing:

1. On the client, check everything (:func:`prepare_sweep`): the spec
   (validated when it was made), sweep names against the system, fixed
   values, times, options; the result's layout from the spec's kernel
   (nothing compiled). Without a store, the merged result must fit the
   client's memory (:class:`ResultTooLargeError`); with one, an existing
   store must hold this very sweep (resumed) or be replaced on request
   (:class:`~cubie_dist.zarr_store.StoreMismatchError`).
2. Ask the workers for memory, threads and GPUs; plan the chunks
   (:func:`cubie_dist.planner.plan`), or take a resumed store's own chunks.
3. Register :class:`~cubie_dist.worker.SolverPlugin` (idempotent: a warm
   worker keeps its compiled solvers), scatter the spec and the layout
   ONCE to every worker, and submit one task per chunk still to do
   (:mod:`cubie_dist.submission`), which carries only its chunk index.
4. Hand each result to the sink (:mod:`cubie_dist.sinks`): copied into
   preallocated arrays, or written by the worker into the store.
"""

from __future__ import annotations

import json
import operator
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import psutil
import xarray as xr
from distributed import Client

from cubie_kernel.inputs import check_finite_number

from cubie_dist.chunks import Plan, format_bytes
from cubie_dist.inputs import RunInputs, coordinate_name, fixed_input_attrs, resolve_inputs
from cubie_dist.layout import SweepLayout, result_bytes_per_run
from cubie_dist.planner import WorkerInfo, check_duration, plan, worker_infos
from cubie_dist.progress import make_progress
from cubie_dist.sinks import WRITERS, MemorySink, StoreSink
from cubie_dist.spec import SolverSpec
from cubie_dist.submission import run_chunks
from cubie_dist.sweep import Sweep
from cubie_dist.tasks import call_token, key_name, submit_chunk, task_resources
from cubie_dist.worker import SolverPlugin, workers_to_compile
from cubie_dist.zarr_store import ZarrStore, identity

#: Chunks kept in flight per worker thread (at least :data:`MIN_WINDOW` in all).
WINDOW_PER_THREAD = 8
MIN_WINDOW = 64
#: Default share of the client's available memory an in-memory result may take.
RESULT_MEMORY_FRACTION = 0.5


class ResultTooLargeError(MemoryError):
    """The merged result would not fit the client's memory; write to a store instead."""


class StoreUnreachableError(OSError):
    """Some workers cannot see the store's folder; write from the client or use a shared path."""


def _non_negative_int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{field} must be an int >= 0, got a bool ({value!r})")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{field} must be an int >= 0, got {value!r}") from None
    if value < 0:
        raise ValueError(f"{field} must be an int >= 0, got {value}")
    return value


@attrs.frozen
class SweepCall:
    """One checked ``run_sweep`` call: what to run and where results go."""

    spec: SolverSpec
    sweep: Sweep
    inputs: RunInputs
    duration: float
    t0: float
    warmup: float
    retries: int
    labels: tuple[str, ...]
    template: xr.Dataset
    store: ZarrStore | None
    resume: bool
    write_on: str

    @property
    def identity(self) -> dict[str, str]:
        """The store identity of this call (:func:`cubie_dist.zarr_store.identity`)."""
        return identity(self.spec, self.sweep, self.inputs, self.duration, self.t0, self.warmup)


def prepare_sweep(
    spec: SolverSpec,
    sweep: Sweep,
    duration: float,
    initial_values: Mapping[str, float] | None = None,
    parameters: Mapping[str, float] | None = None,
    *,
    t0: float = 0.0,
    warmup: float = 0.0,
    retries: int = 2,
    store: str | os.PathLike | None = None,
    overwrite: bool = False,
    write_on: str = "workers",
    result_memory_fraction: float = RESULT_MEMORY_FRACTION,
) -> SweepCall:
    """Check a sweep call on the client, before any cluster is involved.

    Takes the arguments of :func:`run_sweep` of the same names and raises
    what it documents for bad input, :class:`ResultTooLargeError` and
    :class:`~cubie_dist.zarr_store.StoreMismatchError`. Writes nothing and
    compiles nothing.
    """
    if not isinstance(spec, SolverSpec):
        raise TypeError(f"spec must be a cubie_dist.SolverSpec, got {type(spec).__name__}")
    inputs = resolve_inputs(spec.system, sweep, initial_values, parameters)
    duration = check_duration(duration)
    t0 = check_finite_number(t0, "t0")
    warmup = check_finite_number(warmup, "warmup")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    retries = _non_negative_int(retries, "retries")
    if write_on not in WRITERS:
        raise ValueError(f"write_on must be one of {WRITERS}, got {write_on!r}")
    fraction = result_memory_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
        0 < fraction <= 1
    ):
        raise ValueError(f"result_memory_fraction must be a number in (0, 1], got {fraction!r}")
    spec.per_run_bytes(duration)  # builds the kernel's layout once, on the client
    labels = tuple(coordinate_name(spec.system, n) for n in sweep.names)
    template = spec.empty_result(duration, t0, warmup, swept=labels)
    resume = False
    if store is None:
        _check_fits(sweep, template, fraction)
    else:
        if not isinstance(store, (str, os.PathLike)):
            raise TypeError(f"store must be a path (str or os.PathLike), got {type(store).__name__}")
        store = ZarrStore(store)
        resume = store.check_resumable(
            identity(spec, sweep, inputs, duration, t0, warmup), bool(overwrite)
        )
    return SweepCall(
        spec, sweep, inputs, duration, t0, warmup, retries, labels, template, store, resume,
        write_on,
    )


def _check_fits(sweep: Sweep, template: xr.Dataset, fraction: float) -> None:
    """Raise ResultTooLargeError if the in-memory result exceeds its share of memory."""
    needed = sweep.n_runs * result_bytes_per_run(template, sweep.kind == "grid")
    available = psutil.virtual_memory().available
    allowed = int(fraction * available)
    if needed > allowed:
        raise ResultTooLargeError(
            f"the merged result needs {format_bytes(needed)} but the client may use "
            f"{format_bytes(allowed)} ({fraction:.0%} of {format_bytes(available)} available); "
            "write it to a store instead (run_sweep(..., store='x.zarr'), or --output x.zarr)"
        )


def run_sweep(
    spec: SolverSpec,
    sweep: Sweep,
    duration: float,
    initial_values: Mapping[str, float] | None = None,
    parameters: Mapping[str, float] | None = None,
    *,
    client: Client | None = None,
    store: str | os.PathLike | None = None,
    overwrite: bool = False,
    write_on: str = "workers",
    t0: float = 0.0,
    warmup: float = 0.0,
    retries: int = 2,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    result_memory_fraction: float = RESULT_MEMORY_FRACTION,
    worker_budgets: Sequence[int] | None = None,
    min_chunk_runs: int | None = None,
    chunks_per_worker: int = 4,
    safety: float = 0.8,
    max_chunk_runs: int | None = None,
) -> xr.Dataset:
    """Integrate every run of ``sweep`` with ``spec``; return one Dataset.

    Parameters
    ----------
    spec
        What to compile: system and Solver settings.
    sweep
        What to run. Its names are states (swept initial values) or
        parameters of ``spec.system``.
    duration
        Saved interval of every run (> 0).
    initial_values, parameters
        Finite scalar values of inputs the sweep does not vary; others take
        the system's defaults.
    client
        A ``distributed.Client`` of any cluster. None starts the embedded
        default (:mod:`cubie_dist.local`) and closes it afterwards.
    store
        A Zarr (v3) store path, e.g. ``"out.zarr"``: results are streamed
        into it chunk by chunk and client memory stays O(chunks). If it
        holds this same sweep, only chunks not yet written are computed
        (resume); a store of a different sweep is refused, naming what
        differs. None: the result is assembled in memory.
    overwrite
        Replace an existing store of a different sweep (a path that is not a
        Zarr store is never deleted).
    write_on
        ``"workers"`` (default): each chunk task writes its own region, so
        the path must be reachable by every worker (local disk for a local
        cluster, a shared filesystem on SLURM). ``"client"``: results come
        back and the client writes them, for stores the workers cannot reach.
    t0, warmup
        Start time and unsaved settling time, as in ``Solver.solve``.
    retries
        Times a failed chunk task is retried before the sweep fails.
    progress
        Show a progress bar (stderr, or tqdm if installed) on sweeps that
        take over a second; resumed chunks count as done.
    report
        Called with one-line messages (the plan, what a resume skips), e.g.
        ``print``; None is silent.
    result_memory_fraction
        Without a store: refuse (before submitting anything) a result larger
        than this share of the client's available memory.
    worker_budgets, min_chunk_runs, chunks_per_worker, safety, max_chunk_runs
        Planner options; see :func:`cubie_dist.planner.plan`. A resumed store
        keeps the chunks it was created with.

    Returns
    -------
    xarray.Dataset
        A grid sweep has one dim per axis (``x(rho, sigma, time)``), other
        sweeps a ``run`` dim with the inputs as coordinates; ``status`` and
        step counters likewise. ``attrs`` record the solver settings, the
        system (name and JSON definition), the sweep (JSON), the plan and
        the fixed inputs; all are netCDF-serialisable. With a store: the
        store opened lazily (:func:`cubie_dist.open_sweep`), same values.

    Raises
    ------
    ValueError, TypeError, KeyError
        Bad input of any kind, always before any task is submitted.
    ResultTooLargeError
        Without a store, the result would not fit the client's memory.
    cubie_dist.zarr_store.StoreMismatchError
        The store holds a different sweep (and not ``overwrite``), or the
        path is something other than a Zarr store.
    StoreUnreachableError
        ``write_on="workers"`` and some worker cannot see the store's folder
        (checked before the store is written).
    cubie_dist.submission.ChunkFailedError
        A chunk task raised after its retries (run range and worker
        traceback in the message). A run that fails numerically is not an
        error: its ``status`` says what happened. Chunks already in a
        store stay there: the same call resumes.
    """
    call = prepare_sweep(
        spec, sweep, duration, initial_values, parameters, t0=t0, warmup=warmup,
        retries=retries, store=store, overwrite=overwrite, write_on=write_on,
        result_memory_fraction=result_memory_fraction,
    )
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client or None, got {type(client).__name__}")
    plan_options = dict(
        worker_budgets=worker_budgets,
        min_chunk_runs=min_chunk_runs,
        chunks_per_worker=chunks_per_worker,
        safety=safety,
        max_chunk_runs=max_chunk_runs,
    )
    report = report or (lambda message: None)
    if client is None:
        from cubie_dist.local import local_client

        with local_client() as local:
            return _run(local, call, plan_options, progress, report)
    return _run(client, call, plan_options, progress, report)


def _check_reachable(client: Client, store: ZarrStore) -> None:
    """Every worker must see the folder the store lives in (or will)."""
    folder = str(Path(store.path).parent)
    seen = client.run(os.path.isdir, folder)
    blind = sorted(address for address, ok in seen.items() if not ok)
    if blind:
        raise StoreUnreachableError(
            f"{len(blind)} of {len(seen)} worker(s) cannot see {folder} (e.g. {blind[0]}); "
            "put the store on a filesystem every worker mounts, or pass write_on='client'"
        )


def _run(
    client: Client,
    call: SweepCall,
    plan_options: dict[str, Any],
    progress: bool,
    report: Callable[[str], None],
) -> xr.Dataset:
    spec, sweep, store = call.spec, call.sweep, call.store
    workers = worker_infos(client)
    if store is not None and call.write_on == "workers":
        _check_reachable(client, store)
    the_plan = plan(spec, sweep, call.duration, workers=workers, **plan_options)
    if call.resume:  # the store's own blocks, whatever these workers would plan
        the_plan = store.plan(the_plan.per_run_bytes, the_plan.budget_bytes, len(workers))
    report(repr(the_plan))
    layout = SweepLayout(sweep, call.labels, the_plan, call.template)
    provenance = _provenance(spec, sweep, call.inputs, the_plan, workers)
    if store is None:
        sink = MemorySink(layout)
    else:
        if not call.resume:
            store.create(layout, call.identity, provenance)
        sink = StoreSink(layout, store, store.done() if call.resume else {}, call.write_on)
        if call.resume:
            report(
                f"resuming {store.path}: {sink.done_chunks:,} of {the_plan.n_chunks:,} "
                f"chunks ({sink.done_runs:,} runs) already written"
            )
    client.register_plugin(SolverPlugin())
    compiling = workers_to_compile(client, spec)
    if compiling:
        t = call.template.attrs
        report(
            f"compiling {t['system']} {t['method']} {t['precision']} on {compiling} "
            f"worker{'s' if compiling > 1 else ''} (once per worker, with the first chunks)"
        )
    # fresh keys per call: reusing a key just released races with its release
    nonce = uuid.uuid4().hex[:12]
    spec_key = f"cubie-spec-{spec.token()[:16]}-{nonce}"
    layout_key = f"cubie-layout-{sweep.token()[:16]}-{nonce}"
    shared = client.scatter({spec_key: spec, layout_key: layout}, broadcast=True, hash=False)
    name = key_name(
        spec.token(),
        sweep.token(),
        call_token(spec, sweep, call.inputs, call.duration, call.t0, call.warmup,
                   the_plan.block_shape),
    )
    task_args = (call.inputs, call.duration, call.t0, call.warmup)
    resources = task_resources(w.resources for w in workers)

    def submit(chunk):
        return submit_chunk(
            client, chunk, shared[spec_key], shared[layout_key], name, task_args, call.retries,
            resources, sink.worker_store,
        )

    bar = make_progress(
        progress, sweep.n_runs, the_plan.n_chunks, sink.tally.runs, sink.tally.chunks
    )
    window = max(MIN_WINDOW, WINDOW_PER_THREAD * sum(w.nthreads for w in workers))
    try:
        run_chunks(
            client,
            sink.todo(),
            submit,
            sink.add,
            n_chunks=the_plan.n_chunks,
            window=window,
            retries=call.retries,
            progress=bar,
        )
    finally:
        for future in shared.values():
            future.release()
    return sink.finish(provenance)


def _provenance(
    spec: SolverSpec, sweep: Sweep, inputs: RunInputs, the_plan: Plan, workers: list[WorkerInfo]
) -> dict[str, Any]:
    """Global attrs: spec, system, sweep, plan and fixed inputs (netCDF-safe)."""
    system = spec.system
    return {
        "system": system.name,
        "system_definition": json.dumps(system.to_dict()),
        "solver_settings": json.dumps(spec.canonical_settings()),
        "spec_token": spec.token(),
        "sweep": json.dumps(sweep.describe()),  # values: in the coordinates
        "sweep_kind": sweep.kind,
        "sweep_token": sweep.token(),
        "n_runs": sweep.n_runs,
        "plan_n_chunks": the_plan.n_chunks,
        "plan_chunk_runs": the_plan.chunk_runs,
        "plan_per_run_bytes": the_plan.per_run_bytes,
        "plan_budget_bytes": the_plan.budget_bytes,
        "plan_limited_by": the_plan.limited_by,
        "n_workers": len(workers),
        **fixed_input_attrs(system, inputs),
    }
