"""The shape of a sweep's result, and where each chunk's results go in it.

One :class:`SweepLayout` serves both sinks (:mod:`cubie_dist.sinks`): the
in-memory result and the Zarr store have the same variables, dims,
coordinates and attributes, value for value.

- A grid sweep has one dim per axis, ``x(rho, sigma, time)``: a run's index
  is the C-order flat index of the grid, and every chunk of the plan
  (:mod:`cubie_dist.chunks`) is a block of the grid, so a chunk's
  ``(run, ...)`` arrays reshape into their block without a copy.
- Zip, table and sample sweeps keep dim ``run`` (global run indices) with
  the swept inputs as coordinates along it; a chunk is a ``run`` range.

Variables, dtypes, attributes and the ``time`` axis come from the kernel's
own zero-run result (:meth:`cubie_kernel.Solver.empty_result`), so the
layout is known before any chunk runs and nothing is compiled for it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from cubie_dist.chunks import Chunk, Plan
from cubie_dist.sweep import Sweep

#: Per-chunk attrs of the kernel's Dataset that are summed over chunks.
SUMMED_ATTRS = ("kernel_seconds", "device_chunks")

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


def result_bytes_per_run(template: xr.Dataset, is_grid: bool) -> int:
    """Bytes of one run's share of a result: its per-run variables and, unless
    the sweep is a grid (whose axes are its coordinates), its run coordinates."""
    total = 0
    for name, var in template.variables.items():
        if "run" not in var.dims or (is_grid and name in template.coords):
            continue
        rest = [template.sizes[d] for d in var.dims if d != "run"]
        total += var.dtype.itemsize * math.prod(rest)
    return total


class SweepLayout:
    """The sweep-shaped result of ``plan`` applied to ``sweep``.

    Parameters
    ----------
    sweep
        The sweep (its kind, axes and run count).
    labels
        Result label of each sweep name, in sweep order (``initial_<state>``
        for swept states).
    plan
        The chunks; their blocks are the store's Zarr chunks.
    template
        A zero-run result of the kernel (:meth:`cubie_kernel.Solver.empty_result`).
    """

    def __init__(self, sweep: Sweep, labels: Iterable[str], plan: Plan, template: xr.Dataset):
        self.sweep = sweep
        self.labels = tuple(labels)
        self.plan = plan
        self.template = template
        self.is_grid = sweep.kind == "grid"
        self.lead_dims = self.labels if self.is_grid else ("run",)
        self.shape = plan.shape
        #: name -> dims after the run dim, of every per-run data variable
        self.variables = {
            name: tuple(d for d in var.dims if d != "run")
            for name, var in template.data_vars.items()
            if "run" in var.dims
        }
        #: per-run coordinates written chunk by chunk (non-grid sweeps)
        self.run_coords = (
            () if self.is_grid
            else tuple(n for n, c in template.coords.items() if c.dims == ("run",))
        )

    # ------------------------------------------------------------- sizes
    def _rest_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.template.sizes[d] for d in self.variables[name])

    @property
    def bytes_per_run(self) -> int:
        """Bytes of one run's share of the result (:func:`result_bytes_per_run`)."""
        return result_bytes_per_run(self.template, self.is_grid)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole result's per-run arrays."""
        return self.sweep.n_runs * self.bytes_per_run

    # ------------------------------------------------------------- whole result
    def _fixed_coords(self) -> dict[str, tuple]:
        """Coordinates that do not grow with the runs: grid axes, time, ..."""
        coords = {}
        if self.is_grid:
            for label, axis in zip(self.labels, self.sweep.axes.values()):
                coords[label] = (label, axis, self.template[label].attrs)
        for name, coord in self.template.coords.items():
            if "run" not in coord.dims:
                coords[name] = (coord.dims, coord.values, coord.attrs)
        return coords

    def allocate(self, lazy: bool = False) -> xr.Dataset:
        """The whole result with uninitialised per-run arrays.

        ``lazy=False``: NumPy arrays (``np.empty``) to fill in memory; a
        non-grid ``run`` coordinate is filled here. ``lazy=True``: one-chunk
        dask arrays that are never computed (a store template: only their
        metadata is written), and per-run coordinates without an index, so
        nothing of size ``n_runs`` is materialised.
        """
        import dask.array as da

        def empty(shape, dtype):
            if lazy:
                return da.empty(shape, dtype=dtype, chunks=shape)
            return np.empty(shape, dtype=dtype)

        data_vars = {}
        for name, rest in self.variables.items():
            var = self.template[name]
            shape = self.shape + self._rest_shape(name)
            data_vars[name] = (self.lead_dims + rest, empty(shape, var.dtype), var.attrs)
        for name, var in self.template.data_vars.items():
            if "run" not in var.dims:
                data_vars[name] = (var.dims, var.values, var.attrs)
        coords = self._fixed_coords()
        for name in self.run_coords:
            coord = self.template[name]
            values = empty(self.shape, coord.dtype)
            if name == "run" and not lazy:
                values = np.arange(self.sweep.n_runs, dtype=coord.dtype)
            coords[name] = ("run", values, coord.attrs)
        if lazy:  # no index: an index would load the run coordinate
            coords = xr.Coordinates(
                {k: xr.Variable(*v) for k, v in coords.items()}, indexes={}
            )
        return xr.Dataset(data_vars=data_vars, coords=coords)

    def encoding(self) -> dict[str, dict[str, Any]]:
        """Zarr chunks of every per-run variable: the plan's blocks, whole otherwise."""
        block = self.plan.block_shape
        encoding = {
            name: {"chunks": block + self._rest_shape(name)} for name in self.variables
        }
        for name in self.run_coords:
            encoding[name] = {"chunks": block}
        return encoding

    # ------------------------------------------------------------- one chunk
    def region(self, chunk: Chunk) -> dict[str, slice]:
        """The chunk's block as ``{dim: slice}`` of the sweep-shaped result."""
        block = self.plan.chunks.block(chunk)
        return dict(zip(self.lead_dims, block))

    def piece(self, chunk: Chunk, ds: xr.Dataset) -> xr.Dataset:
        """A chunk's ``(run, ...)`` result as its block of the sweep-shaped result.

        Only per-run variables (and, for non-grid sweeps, the run coordinates)
        are kept: what a region write of the block needs.
        """
        if ds.sizes.get("run") != chunk.n_runs:
            raise ValueError(
                f"chunk {chunk.index} (runs [{chunk.start}, {chunk.stop})) returned "
                f"{ds.sizes.get('run')} runs, expected {chunk.n_runs}"
            )
        block = self.plan.chunks.block(chunk)
        block_shape = tuple(s.stop - s.start for s in block)
        data_vars = {}
        for name, rest in self.variables.items():
            values = ds[name].transpose("run", *rest).values
            data_vars[name] = (
                self.lead_dims + rest,
                values.reshape(block_shape + values.shape[1:]),
                self.template[name].attrs,
            )
        # no index: xarray's region writes skip indexed coordinates
        coords = xr.Coordinates(
            {
                name: xr.Variable("run", ds[name].values, self.template[name].attrs)
                for name in self.run_coords
            },
            indexes={},
        )
        return xr.Dataset(data_vars=data_vars, coords=coords)

    def check_fixed_coords(self, chunk: Chunk, ds: xr.Dataset) -> None:
        """Raise ValueError if a chunk's ``time`` (or other fixed) coordinate differs."""
        for name, coord in self.template.coords.items():
            if "run" not in coord.dims and not np.array_equal(coord.values, ds[name].values):
                raise ValueError(
                    f"chunk {chunk.index} returned a different {name!r} coordinate "
                    "than the layout expects"
                )

    # ------------------------------------------------------------- attributes
    def attrs(self, summed: Mapping[str, float], targets: Iterable[str],
              provenance: Mapping[str, Any]) -> dict[str, Any]:
        """Global attrs: the kernel's own (per-run fixed parameters dropped),
        ``summed`` chunk figures, every target used, then ``provenance``."""
        merged = {
            k: v for k, v in self.template.attrs.items()
            if not str(k).startswith("parameter_") and k not in SUMMED_ATTRS
        }
        merged.update(summed)
        targets = sorted(set(targets))
        if targets:
            merged["target"] = ",".join(targets)
        merged.update(provenance)
        return {k: netcdf_attr(v) for k, v in merged.items()}
