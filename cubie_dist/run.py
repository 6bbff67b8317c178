"""``run_sweep``: integrate every run of a sweep on a dask cluster, get one Dataset.

Order of work, so that bad input never reaches a cluster:

1. On the client, check everything: the spec (already validated when it
   was made), sweep names against the system, fixed values, times, options;
   read the per-run bytes from the spec's kernel.
2. Ask the workers for memory, threads and GPUs; plan the chunks
   (:func:`cubie_dist.planner.plan`).
3. Register :class:`~cubie_dist.worker.SolverPlugin` (idempotent: a warm
   worker keeps its compiled solvers), scatter the spec and the sweep ONCE
   to every worker (``broadcast=True``), and submit one
   task per chunk that takes their futures, so chunks carry only their run
   range and a few floats.
4. Assemble results as they complete (:mod:`cubie_dist.merge`).
"""

from __future__ import annotations

import json
import operator
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr
from distributed import Client

from cubie_kernel.inputs import check_finite_number

from cubie_dist.inputs import RunInputs, coordinate_name, fixed_input_attrs, resolve_inputs
from cubie_dist.merge import SweepAssembler, gather_chunks
from cubie_dist.plan import Plan
from cubie_dist.planner import WorkerInfo, check_duration, plan, worker_infos
from cubie_dist.progress import make_progress
from cubie_dist.spec import SolverSpec
from cubie_dist.sweep import Sweep
from cubie_dist.tasks import call_token, key_name, submit_chunk, task_resources
from cubie_dist.worker import SolverPlugin

#: Chunks kept in flight per worker thread (at least :data:`MIN_WINDOW` in all).
WINDOW_PER_THREAD = 8
MIN_WINDOW = 64


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


def run_sweep(
    spec: SolverSpec,
    sweep: Sweep,
    duration: float,
    initial_values: Mapping[str, float] | None = None,
    parameters: Mapping[str, float] | None = None,
    *,
    client: Client | None = None,
    t0: float = 0.0,
    warmup: float = 0.0,
    retries: int = 2,
    progress: bool = True,
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
    t0, warmup
        Start time and unsaved settling time, as in ``Solver.solve``.
    retries
        Times a failed chunk task is retried before the sweep fails.
    progress
        Show a progress bar (stderr, or tqdm if installed) on sweeps that
        take over a second.
    worker_budgets, min_chunk_runs, chunks_per_worker, safety, max_chunk_runs
        Planner options; see :func:`cubie_dist.planner.plan`.

    Returns
    -------
    xarray.Dataset
        A grid sweep has one dim per axis (``x(rho, sigma, time)``), other
        sweeps a ``run`` dim with the inputs as coordinates; ``status`` and
        step counters likewise. ``attrs`` record the solver settings, the
        system (name and JSON definition), the sweep (JSON), the plan and
        the fixed inputs; all are netCDF-serialisable.

    Raises
    ------
    ValueError, TypeError, KeyError
        Bad input of any kind, always before any task is submitted.
    cubie_dist.merge.ChunkFailedError
        A chunk task raised after its retries (run range and worker
        traceback in the message). A run that fails numerically is not an
        error: its ``status`` says what happened.
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
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"client must be a distributed.Client or None, got {type(client).__name__}")
    spec.per_run_bytes(duration)  # builds the kernel's layout once, on the client
    plan_options = dict(
        worker_budgets=worker_budgets,
        min_chunk_runs=min_chunk_runs,
        chunks_per_worker=chunks_per_worker,
        safety=safety,
        max_chunk_runs=max_chunk_runs,
    )
    args = (spec, sweep, inputs, duration, t0, warmup, retries, progress, plan_options)
    if client is None:
        from cubie_dist.local import local_client

        with local_client() as local:
            return _run(local, *args)
    return _run(client, *args)


def _run(
    client: Client,
    spec: SolverSpec,
    sweep: Sweep,
    inputs: RunInputs,
    duration: float,
    t0: float,
    warmup: float,
    retries: int,
    progress: bool,
    plan_options: dict[str, Any],
) -> xr.Dataset:
    workers = worker_infos(client)
    the_plan = plan(spec, sweep, duration, workers=workers, **plan_options)
    client.register_plugin(SolverPlugin())
    # fresh keys per call: reusing a key just released races with its release
    nonce = uuid.uuid4().hex[:12]
    spec_key = f"cubie-spec-{spec.token()[:16]}-{nonce}"
    sweep_key = f"cubie-sweep-{sweep.token()[:16]}-{nonce}"
    shared = client.scatter({spec_key: spec, sweep_key: sweep}, broadcast=True, hash=False)
    name = key_name(
        spec.token(),
        sweep.token(),
        call_token(spec, sweep, inputs, duration, t0, warmup, the_plan.n_chunks),
    )
    task_args = (inputs, duration, t0, warmup)
    resources = task_resources(w.resources for w in workers)

    def submit(chunk):
        return submit_chunk(
            client, chunk, shared[spec_key], shared[sweep_key], name, task_args, retries, resources
        )

    labels = [coordinate_name(spec.system, n) for n in sweep.names]
    assembler = SweepAssembler(sweep, labels)
    bar = make_progress(progress, sweep.n_runs, the_plan.n_chunks)
    window = max(MIN_WINDOW, WINDOW_PER_THREAD * sum(w.nthreads for w in workers))
    try:
        gather_chunks(
            client,
            the_plan.chunks,
            submit,
            assembler,
            n_chunks=the_plan.n_chunks,
            window=window,
            retries=retries,
            progress=bar,
        )
    finally:
        for future in shared.values():
            future.release()
    return assembler.dataset(_provenance(spec, sweep, inputs, the_plan, workers))


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
        "sweep": json.dumps(sweep.to_dict()),
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
