"""A sweep's Zarr (v3) store: template, region writes, completion markers, resume.

Layout on disk (a directory every writer can reach):

- the result itself, exactly the in-memory result's variables, dims,
  coordinates and attributes (:class:`~cubie_dist.layout.SweepLayout`),
  written once as a metadata-only template, then filled chunk by chunk
  with region writes; the Zarr chunks are the plan's blocks, so no two
  tasks ever write the same Zarr chunk;
- ``cubie_chunks/<index>.json``: one completion marker per finished chunk,
  written (to a temporary name, then renamed) only after that chunk's
  region write has returned, holding the chunk's summary (status counts,
  step counts, timings, target, worker). Zarr ignores this directory.

The root attributes record the store's identity (:func:`identity`: tokens
of the spec and the sweep, the fixed inputs and the times) and the plan's
blocks. Running the same call again computes only chunks without a
marker; a different call is refused (:class:`StoreMismatchError`) unless
told to overwrite. When every chunk is done the attributes get the
summed figures and the metadata is consolidated, so ``xarray.open_zarr``
opens the store lazily without warnings.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from cubie_dist.chunks import Chunk, ChunkSequence, Plan
from cubie_dist.layout import SUMMED_ATTRS, SweepLayout, netcdf_attr

#: Root attribute naming this format.
FORMAT = "cubie_dist.store/1"
#: Directory of completion markers inside the store.
MARKERS = "cubie_chunks"
#: Identity keys, in the order a mismatch is reported.
IDENTITY_KEYS = ("spec", "sweep", "initial_values", "parameters", "duration", "t0", "warmup")
_PLAN_KEYS = ("plan_shape", "plan_split_axis", "plan_split_size")


class StoreMismatchError(ValueError):
    """An existing store holds a different sweep than the one asked for."""


class IncompleteStoreError(RuntimeError):
    """A store some of whose chunks have not been written yet."""


def identity(spec, sweep, inputs, duration: float, t0: float, warmup: float) -> dict[str, str]:
    """What decides a store's numbers, as strings: tokens and exact (hex) times."""
    return {
        "spec": spec.token(),
        "sweep": sweep.token(),
        "initial_values": json.dumps(
            {k: float(v).hex() for k, v in sorted(inputs.fixed_initial_values.items())}
        ),
        "parameters": json.dumps(
            {k: float(v).hex() for k, v in sorted(inputs.fixed_parameters.items())}
        ),
        "duration": float(duration).hex(),
        "t0": float(t0).hex(),
        "warmup": float(warmup).hex(),
    }


def _describe(key: str, value: str) -> str:
    if key in ("duration", "t0", "warmup"):
        return repr(float.fromhex(value))
    if key in ("initial_values", "parameters"):
        return repr({k: float.fromhex(v) for k, v in json.loads(value).items()})
    return f"token {value[:12]}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Zarr warns about the marker directory and zarr-3 consolidation; both are expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr")
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata")
        yield


class ZarrStore:
    """The store at ``path`` (made absolute, so workers resolve it the same way).

    Parameters
    ----------
    path
        Directory of the store, e.g. ``"out.zarr"``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(Path(path).expanduser().absolute())

    def __repr__(self) -> str:
        return f"ZarrStore({self.path!r})"

    @property
    def _markers(self) -> Path:
        return Path(self.path) / MARKERS

    # ----------------------------------------------------------------- reading
    def exists(self) -> bool:
        """Whether ``path`` exists at all (a store or anything else)."""
        return os.path.lexists(self.path)

    def is_zarr(self) -> bool:
        """Whether ``path`` is a Zarr (v3) group."""
        return (Path(self.path) / "zarr.json").is_file()

    def attrs(self) -> dict[str, Any]:
        """The root attributes (empty if the store is not a Zarr group)."""
        if not self.is_zarr():
            return {}
        import zarr

        return dict(zarr.open_group(self.path, mode="r").attrs)

    def stored_identity(self) -> dict[str, str] | None:
        """The identity recorded by :meth:`create`, or None if not a cubie store."""
        attrs = self.attrs()
        if attrs.get("store_format") != FORMAT:
            return None
        return {key: attrs.get(f"identity_{key}") for key in IDENTITY_KEYS}

    def done(self) -> dict[int, dict[str, Any]]:
        """Summaries of the finished chunks, by chunk index (read from the markers)."""
        out = {}
        try:
            names = os.listdir(self._markers)
        except FileNotFoundError:
            return out
        for name in names:
            stem, dot, suffix = name.partition(".")
            if suffix != "json" or not stem.isdigit():
                continue  # a temporary file of an interrupted marker write
            try:
                out[int(stem)] = json.loads((self._markers / name).read_text())
            except (OSError, ValueError):
                continue  # unreadable: the chunk is simply written again
        return out

    def chunks(self) -> ChunkSequence:
        """The chunks the store was created with (their blocks are its Zarr chunks)."""
        attrs = self.attrs()
        shape = tuple(int(n) for n in np.atleast_1d(attrs["plan_shape"]))
        return ChunkSequence(shape, int(attrs["plan_split_axis"]), int(attrs["plan_split_size"]))

    def plan(self, per_run_bytes: int, budget_bytes: int, n_workers: int) -> Plan:
        """The plan the store was created with, for today's per-run bytes and workers."""
        chunks = self.chunks()
        chunk_runs = chunks.split_size * chunks.tail
        return Plan(
            n_runs=math.prod(chunks.shape),
            shape=chunks.shape,
            split_axis=chunks.split_axis,
            split_size=chunks.split_size,
            per_run_bytes=per_run_bytes,
            budget_bytes=max(budget_bytes, chunk_runs * per_run_bytes),
            n_workers=n_workers,
            limited_by=str(self.attrs().get("plan_limited_by", "budget")),
        )

    # ----------------------------------------------------------------- checking
    def check_resumable(self, wanted: Mapping[str, str], overwrite: bool) -> bool:
        """Decide what to do with what is at ``path``; True to resume it.

        Returns False when there is nothing to resume (nothing at ``path``,
        an empty folder, or ``overwrite``). Raises FileNotFoundError when
        the folder that should hold the store does not exist. Raises :class:`StoreMismatchError` when the store
        holds a different sweep (naming every difference), or when
        ``path`` is something else than a cubie-dist store and would have
        to be replaced without ``overwrite``; raises it also, even with
        ``overwrite``, for a path that is not a Zarr store at all (never
        deleted).
        """
        folder = Path(self.path).parent
        if not folder.is_dir():
            raise FileNotFoundError(f"store {self.path}: folder {folder} does not exist")
        if not self.exists() or (Path(self.path).is_dir() and not any(Path(self.path).iterdir())):
            return False  # nothing there, or an empty folder made for it
        if not self.is_zarr():
            raise StoreMismatchError(
                f"{self.path} exists and is not a Zarr store; choose another path "
                "(it is never deleted, not even with overwrite)"
            )
        if overwrite:
            return False
        stored = self.stored_identity()
        if stored is None:
            raise StoreMismatchError(
                f"{self.path} is a Zarr store not written by cubie_dist.run_sweep; "
                "pass overwrite=True (--overwrite) to replace it, or choose another path"
            )
        differs = [
            f"{key} ({_describe(key, stored[key]) if stored[key] else 'missing'} stored, "
            f"{_describe(key, wanted[key])} asked)"
            for key in IDENTITY_KEYS
            if stored[key] != wanted[key]
        ]
        if differs:
            raise StoreMismatchError(
                f"{self.path} holds a different sweep: {'; '.join(differs)} differ(s); "
                "pass overwrite=True (--overwrite) to replace it, or choose another path"
            )
        return True

    # ----------------------------------------------------------------- writing
    def create(self, layout: SweepLayout, ident: Mapping[str, str],
               provenance: Mapping[str, Any]) -> None:
        """Write the metadata-only template (replacing any store at ``path``)."""
        if self.is_zarr():
            shutil.rmtree(self.path)
        elif self.exists():
            os.rmdir(self.path)  # only ever an empty folder (check_resumable)
        template = layout.allocate(lazy=True)
        plan = layout.plan
        template.attrs = layout.attrs({}, (), provenance) | {
            "store_format": FORMAT,
            "complete": 0,
            "plan_shape": np.asarray(plan.shape, dtype=np.int64),
            "plan_split_axis": plan.split_axis,
            "plan_split_size": plan.split_size,
            **{f"identity_{k}": v for k, v in ident.items()},
        }
        with _quiet():
            template.to_zarr(
                self.path, mode="w", compute=False, consolidated=True, zarr_format=3,
                encoding=layout.encoding(),
            )
        self._markers.mkdir()

    def write_chunk(self, layout: SweepLayout, chunk: Chunk, ds: xr.Dataset) -> dict[str, Any]:
        """Write one chunk's results into its region, then its marker; return its summary."""
        piece = layout.piece(chunk, ds)
        layout.check_fixed_coords(chunk, ds)
        with _quiet():
            piece.to_zarr(self.path, region=layout.region(chunk), mode="r+", consolidated=False)
        summary = chunk_summary(chunk, ds)
        marker = self._markers / f"{chunk.index}.json"
        temporary = self._markers / f"{chunk.index}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        with open(temporary, "w") as handle:
            json.dump(summary, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, marker)
        return summary

    def finish(self, attrs: Mapping[str, Any]) -> None:
        """Record the final attributes (``complete = 1``) and consolidate the metadata."""
        import zarr

        group = zarr.open_group(self.path, mode="r+")
        # one metadata write for all of them (attrs.update writes once per key)
        group.update_attributes({k: _json_attr(v) for k, v in attrs.items()} | {"complete": 1})
        with _quiet():
            zarr.consolidate_metadata(self.path)


def _json_attr(value: Any) -> Any:
    value = netcdf_attr(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def chunk_summary(chunk: Chunk, ds: xr.Dataset) -> dict[str, Any]:
    """A chunk's small metadata: run range, status counts, steps, timings, where it ran."""
    values, counts = np.unique(ds["status"].values, return_counts=True)
    summary = {
        "index": chunk.index,
        "start": chunk.start,
        "stop": chunk.stop,
        "status_counts": {str(int(v)): int(c) for v, c in zip(values, counts)},
        "n_steps": int(ds["n_steps"].values.sum(dtype=np.int64)),
        "n_rejected": int(ds["n_rejected"].values.sum(dtype=np.int64)),
        "target": str(ds.attrs.get("target", "")),
        "host": socket.gethostname(),
    }
    for key in SUMMED_ATTRS:
        summary[key] = ds.attrs.get(key, 0)
    return summary


def open_sweep(path: str | os.PathLike, *, allow_incomplete: bool = False) -> xr.Dataset:
    """Open a sweep's store lazily (dask-backed), checking that it is complete.

    ``xarray.open_zarr(path)`` reads the same data; this adds the check and
    the summary written when the sweep finished (``attrs["status_counts"]``:
    runs per status value, ``"0"`` is success).

    Parameters
    ----------
    path
        The store.
    allow_incomplete
        Open a store whose sweep has not finished; chunks not yet written
        read as the fill value (NaN for floats). ``attrs["chunks_done"]``
        says how many are done.

    Raises
    ------
    FileNotFoundError
        No Zarr store at ``path``.
    IncompleteStoreError
        The sweep has not finished writing it (and not ``allow_incomplete``).
    """
    store = ZarrStore(path)
    if not store.is_zarr():
        raise FileNotFoundError(f"{store.path}: no Zarr store there")
    attrs = store.attrs()
    complete = bool(attrs.get("complete", 1))
    if not complete:
        done = len(store.done())
        total = len(store.chunks())
        if not allow_incomplete:
            raise IncompleteStoreError(
                f"{store.path}: {done} of {total} chunks written; run the same sweep "
                "again to finish it (it resumes), or pass allow_incomplete=True"
            )
    with _quiet():
        ds = xr.open_zarr(store.path, consolidated=complete)
    if not complete:
        ds.attrs["chunks_done"] = done
    return ds
