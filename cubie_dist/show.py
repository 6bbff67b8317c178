"""Look at a sweep's result: a text summary, and a picture of one variable.

:func:`summary` prints what a result holds: its dims, its variables (with
units), the runs per status flag, and the timing and plan recorded in its
attributes. :func:`plot` draws one variable at one selection (by default
the last time) as a heatmap over two sweep axes, or as a line over one,
next to a map of the runs' status; it needs matplotlib (the ``plot``
extra), and says so in one line when it is missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from cubie_kernel.status import decode_status

from cubie_dist.chunks import plural

#: Dims that are never sweep axes.
NON_SWEEP_DIMS = ("time", "window")


class PlotUnavailableError(ImportError):
    """matplotlib is not installed (``pip install 'cubie-dist[plot]'``)."""


def open_result(path: str | os.PathLike) -> xr.Dataset:
    """A result written by ``cubie-dist run``: a Zarr store or a netCDF file, lazily."""
    from cubie_dist.zarr_store import open_sweep

    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such result")
    if path.endswith(".nc"):
        return xr.open_dataset(path)
    return open_sweep(path, allow_incomplete=True)


def _status_counts(ds: xr.Dataset) -> dict[int, int]:
    if "status_counts" in ds.attrs:
        return {int(k): v for k, v in json.loads(ds.attrs["status_counts"]).items()}
    values, counts = np.unique(np.asarray(ds["status"].values), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _flag_names(status: int) -> str:
    return "+".join(decode_status(status))


def _with_units(name: str, var: xr.DataArray) -> str:
    units = var.attrs.get("units")
    return f"{name} [{units}]" if units else name


def summary(ds: xr.Dataset) -> str:
    """Dims, variables, runs per status flag, timing and plan of a sweep result."""
    lines = ["dims: " + ", ".join(f"{d}={n:,}" for d, n in ds.sizes.items())]
    lines.append("coordinates: " + ", ".join(_with_units(n, c) for n, c in ds.coords.items()))
    lines.append(
        "variables: " + ", ".join(
            f"{_with_units(n, v)}({', '.join(v.dims)})" for n, v in ds.data_vars.items()
        )
    )
    counts = _status_counts(ds)
    total = sum(counts.values())
    lines.append(f"status ({plural(total, 'run')}):")
    for status, count in sorted(counts.items()):
        lines.append(f"  {_flag_names(status):<32} {count:>14,}  ({count / total:.1%})")
    attrs = ds.attrs
    facts = [
        ("system", attrs.get("system")),
        ("method", attrs.get("method")),
        ("precision", attrs.get("precision")),
        ("target", attrs.get("target")),
        ("kernel seconds (summed over chunks)", attrs.get("kernel_seconds")),
        ("chunks", attrs.get("plan_n_chunks")),
        ("workers", attrs.get("n_workers")),
    ]
    for label, value in facts:
        if value is not None:
            if isinstance(value, float):
                value = f"{value:.3g}"
            lines.append(f"{label}: {value}")
    if attrs.get("complete", 1) == 0:
        lines.append(f"INCOMPLETE: {attrs.get('chunks_done', '?')} chunks written so far")
    return "\n".join(lines)


def parse_selection(items: Sequence[str]) -> dict[str, float | int]:
    """``["time=-1", "sigma=10"]`` -> ``{"time": -1, "sigma": 10.0}`` (ints index, floats select)."""
    out: dict[str, float | int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"--sel {item!r}: expected DIM=VALUE, e.g. time=-1")
        try:
            out[name] = int(value)
        except ValueError:
            try:
                out[name] = float(value)
            except ValueError:
                raise ValueError(f"--sel {item!r}: {value!r} is not a number") from None
    return out


def _select(da: xr.DataArray, selection: Mapping[str, float | int]) -> xr.DataArray:
    for dim, value in selection.items():
        if dim not in da.dims:
            raise ValueError(f"--sel: {dim!r} is not a dim of {da.name!r}; dims: {list(da.dims)}")
        if isinstance(value, int):  # an index: time=-1 is the last saved time
            da = da.isel({dim: value})
        else:
            da = da.sel({dim: value}, method="nearest")
    return da


def plot(
    ds: xr.Dataset,
    variable: str,
    path: str | os.PathLike,
    selection: Mapping[str, float | int] | None = None,
    axes: Sequence[str] | None = None,
) -> list[str]:
    """Write a PNG of ``variable`` (and the status map) to ``path``; return the axes used.

    Parameters
    ----------
    ds
        A sweep result.
    variable
        A data variable, e.g. ``"x"``.
    path
        The PNG to write.
    selection
        ``{dim: value}``: an int indexes (``time=-1`` and ``window=-1``, the
        defaults for a variable with a time or window dim), a float selects
        the nearest coordinate.
    axes
        One or two sweep dims to draw against; by default the two longest
        dims left after the selection (a non-grid result: ``run``).

    Raises
    ------
    KeyError
        No such variable (the message lists them).
    ValueError
        A bad selection or axis, or more than two dims left to draw.
    PlotUnavailableError
        matplotlib is not installed.
    """
    if variable not in ds.data_vars:
        raise KeyError(f"no variable {variable!r}; variables: {', '.join(ds.data_vars)}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailableError(
            "--plot needs matplotlib: pip install 'cubie-dist[plot]' (or matplotlib)"
        ) from None
    selection = dict(selection or {})
    da = ds[variable]
    for dim in NON_SWEEP_DIMS:  # the last saved time, the last summary window
        if dim in da.dims and dim not in selection:
            selection[dim] = -1
    da = _select(da, selection)
    status = _select(ds["status"], {k: v for k, v in selection.items() if k in ds["status"].dims})
    if axes is None:
        axes = sorted(da.dims, key=lambda d: -da.sizes[d])[:2]
    axes = list(axes)
    for dim in axes:
        if dim not in da.dims:
            raise ValueError(f"axis {dim!r} is not a dim of {variable!r} after the selection; "
                             f"dims: {list(da.dims)}")
    rest = [d for d in da.dims if d not in axes]
    if rest:  # a dim not drawn: take its first index, and say so in the title
        da = da.isel({d: 0 for d in rest})
        status = status.isel({d: 0 for d in rest if d in status.dims})
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    if len(axes) == 2:
        da.load().plot(ax=left, x=axes[1], y=axes[0])
        status = status.load()
        status.plot(ax=right, x=axes[1], y=axes[0], cmap="Reds", vmin=0,
                    vmax=max(1, int(status.max())))
    else:
        da.load().plot(ax=left, x=axes[0])
        status.load().plot(ax=right, x=axes[0])
    taken = ", ".join(f"{k}={v}" for k, v in selection.items())
    if rest:
        taken += (", " if taken else "") + ", ".join(f"{d}[0]" for d in rest)
    left.set_title(f"{variable}" + (f" ({taken})" if taken else ""))
    right.set_title("status (0 = success)")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return axes
