"""Assemble chunk results, as they complete, into one sweep-shaped Dataset.

:class:`SweepAssembler` allocates every output at its final shape when the
first chunk arrives (the chunk gives variable names, dtypes and the time
axis) and copies each chunk into its run range: no ``xr.concat``, and
chunks may come in any order. :meth:`SweepAssembler.dataset` then wraps the
arrays in one Dataset:

- a grid sweep is unstacked into its axes, ``x(rho, sigma, time)``: the
  sweep's run index is the C-order flat index of the grid, so the flat
  ``(run, ...)`` buffer is reshaped, never copied;
- zip, table and sample sweeps keep dim ``run`` (global run indices) with
  the swept inputs as coordinates along it.

:func:`gather_chunks` drives submission and collection with
``distributed.as_completed``: at most ``window`` chunks in flight, each
result written as soon as it lands, and on any failure the outstanding
futures are cancelled and :class:`ChunkFailedError` names the chunk's run
range and carries the worker's traceback.
"""

from __future__ import annotations

import numbers
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from distributed import Client, Future, as_completed

from cubie_dist.plan import Chunk
from cubie_dist.sweep import Sweep

#: Per-chunk attrs of the kernel's Dataset that the merge sums.
SUMMED_ATTRS = ("kernel_seconds", "device_chunks")


class ChunkFailedError(RuntimeError):
    """A chunk task raised after its retries.

    Attributes
    ----------
    chunk
        The failed :class:`~cubie_dist.plan.Chunk` (index and run range).
    worker_traceback
        The traceback formatted on the worker, as text.
    """

    def __init__(self, message: str, chunk: Chunk, worker_traceback: str) -> None:
        super().__init__(message)
        self.chunk = chunk
        self.worker_traceback = worker_traceback


_INT32 = np.iinfo(np.int32)


def netcdf_attr(value: Any) -> Any:
    """``value`` in a form netCDF attributes accept (str, number, 1-D array).

    Bools become ints, None ``"none"``, numeric sequences 1-D arrays, other
    objects their ``str``. Integers outside int32 become floats: netCDF3
    (the scipy engine) has no 64-bit integer attributes.
    """
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (numbers.Integral, np.integer)):
        value = int(value)
        return value if _INT32.min <= value <= _INT32.max else float(value)
    if isinstance(value, (str, numbers.Number, np.generic)):
        return value
    if value is None:
        return "none"
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        if array.ndim == 1 and array.dtype.kind in "iuf":
            return array
    return str(value)


class SweepAssembler:
    """Preallocated outputs of a whole sweep, filled chunk by chunk.

    Parameters
    ----------
    sweep
        The sweep being assembled (its kind, shape and grid axes).
    labels
        Result label of each sweep name, in sweep order (``initial_<state>``
        for swept states).
    """

    def __init__(self, sweep: Sweep, labels: Iterable[str]) -> None:
        self.sweep = sweep
        self.labels = tuple(labels)
        self.n_runs = sweep.n_runs
        self.runs_filled = 0
        self._template: xr.Dataset | None = None
        self._variables: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
        self._run_coords: dict[str, np.ndarray] = {}
        self._summed = dict.fromkeys(SUMMED_ATTRS, 0)
        self._targets: set[str] = set()

    @property
    def is_grid(self) -> bool:
        return self.sweep.kind == "grid"

    def _allocate(self, ds: xr.Dataset) -> None:
        self._template = ds.isel(run=slice(0, 0))  # names, dtypes, attrs, time
        for name, var in ds.data_vars.items():
            if "run" not in var.dims:
                continue
            rest = tuple(d for d in var.dims if d != "run")
            shape = (self.n_runs,) + tuple(ds.sizes[d] for d in rest)
            self._variables[name] = (rest, np.empty(shape, dtype=var.dtype))
        if not self.is_grid:
            for name, coord in ds.coords.items():
                if coord.dims == ("run",) and name != "run":
                    self._run_coords[name] = np.empty(self.n_runs, dtype=coord.dtype)

    def add(self, chunk: Chunk, ds: xr.Dataset) -> None:
        """Copy one chunk's result into its run range."""
        if ds.sizes.get("run") != chunk.n_runs:
            raise ValueError(
                f"chunk {chunk.index} (runs [{chunk.start}, {chunk.stop})) returned "
                f"{ds.sizes.get('run')} runs, expected {chunk.n_runs}"
            )
        if self._template is None:
            self._allocate(ds)
        else:
            for name, coord in self._template.coords.items():
                if "run" not in coord.dims and not np.array_equal(coord.values, ds[name].values):
                    raise ValueError(
                        f"chunk {chunk.index} returned a different {name!r} coordinate "
                        "than the first chunk"
                    )
        for name, (rest, flat) in self._variables.items():
            flat[chunk.slice] = ds[name].transpose("run", *rest).values
        for name, flat in self._run_coords.items():
            flat[chunk.slice] = ds[name].values
        for key in SUMMED_ATTRS:
            self._summed[key] += ds.attrs.get(key, 0)
        if "target" in ds.attrs:
            self._targets.add(str(ds.attrs["target"]))
        self.runs_filled += chunk.n_runs

    def dataset(self, attrs: Mapping[str, Any]) -> xr.Dataset:
        """The assembled Dataset, in sweep shape, with ``attrs`` (netCDF-safe).

        The kernel's own attrs of the first chunk come first (per-run fixed
        parameters dropped: ``attrs`` carries the sweep's fixed inputs),
        ``kernel_seconds`` and ``device_chunks`` summed over chunks,
        ``target`` listing every target used; ``attrs`` override.
        """
        if self._template is None or self.runs_filled != self.n_runs:
            raise RuntimeError(
                f"only {self.runs_filled} of {self.n_runs} runs have been assembled"
            )
        template = self._template
        if self.is_grid:
            lead_dims, lead_shape = self.labels, self.sweep.shape
            coords = {
                label: (label, axis, {"long_name": f"swept input {label}"})
                for label, axis in zip(self.labels, self.sweep.axes.values())
            }
        else:
            lead_dims, lead_shape = ("run",), (self.n_runs,)
            coords = {
                "run": ("run", np.arange(self.n_runs, dtype=np.int64), template["run"].attrs)
            }
            for name, flat in self._run_coords.items():
                coords[name] = ("run", flat, template[name].attrs)
        for name, coord in template.coords.items():
            if "run" not in coord.dims:
                coords[name] = (coord.dims, coord.values, coord.attrs)
        data_vars = {}
        for name, (rest, flat) in self._variables.items():
            data = flat.reshape(lead_shape + flat.shape[1:])
            data_vars[name] = (lead_dims + rest, data, template[name].attrs)
        for name, var in template.data_vars.items():
            if "run" not in var.dims:
                data_vars[name] = (var.dims, var.values, var.attrs)
        merged = {
            k: v for k, v in template.attrs.items() if not str(k).startswith("parameter_")
        }
        merged.update(self._summed)
        if self._targets:
            merged["target"] = ",".join(sorted(self._targets))
        merged.update(attrs)
        merged = {k: netcdf_attr(v) for k, v in merged.items()}
        return xr.Dataset(data_vars=data_vars, coords=coords, attrs=merged)


def _failure(chunk: Chunk, n_chunks: int, future: Future, result: Any, retries: int) -> Exception:
    where = f"chunk {chunk.index} of {n_chunks} (runs [{chunk.start}, {chunk.stop}))"
    if future.status == "error" and isinstance(result, tuple) and len(result) == 3:
        _, exc, tb = result
        worker_tb = "".join(traceback.format_exception(type(exc), exc, tb))
        error = ChunkFailedError(
            f"{where} failed after {retries} retries: {type(exc).__name__}: {exc}\n"
            f"worker traceback:\n{worker_tb}",
            chunk,
            worker_tb,
        )
        error.__cause__ = exc
        return error
    return ChunkFailedError(
        f"{where} did not finish (future status {future.status!r}, e.g. cancelled "
        "or its workers were lost)",
        chunk,
        "",
    )


def gather_chunks(
    client: Client,
    chunks: Iterable[Chunk],
    submit: Callable[[Chunk], Future],
    assembler: SweepAssembler,
    *,
    n_chunks: int,
    window: int,
    retries: int,
    progress: Any,
) -> None:
    """Submit ``chunks`` (at most ``window`` in flight); assemble them as they complete.

    Parameters
    ----------
    client
        The client the futures belong to.
    chunks
        Chunks in submission order.
    submit
        Submits one chunk's task and returns its future.
    assembler
        Receives each finished chunk's Dataset.
    n_chunks, retries
        For messages.
    window
        Most futures outstanding at once (bounds the scheduler's queue for
        plans with very many chunks).
    progress
        An object with ``update(runs)`` and ``close()``.

    Raises
    ------
    ChunkFailedError
        The first chunk that failed after its retries; every outstanding
        future is cancelled first.
    """
    pending = iter(chunks)
    in_flight: dict[Any, tuple[Chunk, Future]] = {}
    completed = as_completed(loop=client.loop, with_results=True, raise_errors=False)

    def top_up() -> None:
        while len(in_flight) < window:
            chunk = next(pending, None)
            if chunk is None:
                return
            future = submit(chunk)
            in_flight[future.key] = (chunk, future)
            completed.add(future)

    finished = False
    try:
        top_up()
        for future, result in completed:
            if future.status != "finished":
                chunk, _ = in_flight[future.key]  # cancelled below with the rest
                raise _failure(chunk, n_chunks, future, result, retries)
            chunk, _ = in_flight.pop(future.key)
            assembler.add(chunk, result)
            progress.update(chunk.n_runs)
            future.release()
            top_up()
        finished = True
    finally:
        if not finished and in_flight:
            client.cancel([future for _, future in in_flight.values()])
        progress.close()
