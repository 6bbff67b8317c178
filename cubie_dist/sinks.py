"""Where chunk results go: a sweep-shaped Dataset in memory, or a Zarr store.

A sink knows nothing of scheduling (:mod:`cubie_dist.submission` does
that). It says which chunks still need running (:meth:`todo`), whether
workers write their own results (:attr:`worker_store`), takes each finished
chunk's result (:meth:`add`: a Dataset, or the summary a worker returned
after writing it) and gives back the sweep's result (:meth:`finish`).

- :class:`MemorySink` preallocates every output at its final shape and
  copies each chunk into its block: no ``xr.concat``, any completion order.
- :class:`StoreSink` fills a :class:`~cubie_dist.zarr_store.ZarrStore`.
  With ``write_on="workers"`` every chunk task writes its own region and
  returns only its summary: no result bytes pass through the scheduler or
  the client, whose memory stays O(chunks). With ``write_on="client"``
  results come back and the client writes them: for stores the workers
  cannot reach.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import xarray as xr

from cubie_dist.chunks import Chunk
from cubie_dist.layout import SUMMED_ATTRS, SweepLayout
from cubie_dist.zarr_store import ZarrStore, chunk_summary, open_sweep

#: Who writes a store's chunks: ``run_sweep(write_on=...)``.
WRITERS = ("workers", "client")


class ChunkTally:
    """Sums of the finished chunks' summaries (:func:`~cubie_dist.zarr_store.chunk_summary`)."""

    def __init__(self) -> None:
        self.chunks = 0
        self.runs = 0
        self.summed: dict[str, float] = dict.fromkeys(SUMMED_ATTRS, 0)
        self.status_counts: dict[str, int] = {}
        self.targets: set[str] = set()

    def add(self, summary: Mapping[str, Any]) -> None:
        self.chunks += 1
        self.runs += summary["stop"] - summary["start"]
        for key in SUMMED_ATTRS:
            self.summed[key] += summary.get(key, 0)
        for value, count in summary["status_counts"].items():
            self.status_counts[value] = self.status_counts.get(value, 0) + count
        if summary.get("target"):
            self.targets.add(summary["target"])


class MemorySink:
    """The whole result in memory, filled chunk by chunk.

    Parameters
    ----------
    layout
        The result's layout and the chunks' blocks.
    """

    #: Workers return results; the client copies them in.
    worker_store: ZarrStore | None = None

    def __init__(self, layout: SweepLayout) -> None:
        self.layout = layout
        self.tally = ChunkTally()
        self._result = layout.allocate(lazy=False)
        #: the preallocated NumPy arrays themselves, by name
        self._arrays = {name: self._result[name].variable.values for name in self._result.variables}
        self._added: set[int] = set()

    def todo(self) -> Iterable[Chunk]:
        """Every chunk of the plan."""
        return self.layout.plan.chunks

    @property
    def done_runs(self) -> int:
        """Runs finished before this call (none: memory does not outlive a call)."""
        return 0

    def add(self, chunk: Chunk, ds: xr.Dataset) -> None:
        """Copy one chunk's result into its block (each chunk once)."""
        if chunk.index in self._added:
            raise ValueError(f"chunk {chunk.index} was added twice")
        layout = self.layout
        piece = layout.piece(chunk, ds)
        layout.check_fixed_coords(chunk, ds)
        block = layout.plan.chunks.block(chunk)
        for name in piece.variables:
            if name != "run":  # the run index was filled when allocated
                self._arrays[name][block] = piece[name].values
        self._added.add(chunk.index)
        self.tally.add(chunk_summary(chunk, ds))

    def finish(self, provenance: Mapping[str, Any]) -> xr.Dataset:
        """The assembled Dataset, with the kernel's attrs, summed figures and ``provenance``."""
        n_runs = self.layout.sweep.n_runs
        if self.tally.runs != n_runs:
            raise RuntimeError(f"only {self.tally.runs} of {n_runs} runs have been assembled")
        self._result.attrs = self.layout.attrs(self.tally.summed, self.tally.targets, provenance)
        return self._result


class StoreSink:
    """A Zarr store filled chunk by chunk, by the workers or by the client.

    Parameters
    ----------
    layout
        The result's layout; its plan's blocks are the store's Zarr chunks.
    store
        The store, already created (or found resumable) by the caller.
    done
        Summaries of chunks finished before (read from the markers).
    write_on
        ``"workers"`` (each task writes its region) or ``"client"``.
    """

    def __init__(
        self,
        layout: SweepLayout,
        store: ZarrStore,
        done: Mapping[int, Mapping[str, Any]],
        write_on: str = "workers",
    ) -> None:
        if write_on not in WRITERS:
            raise ValueError(f"write_on must be one of {WRITERS}, got {write_on!r}")
        self.layout = layout
        self.store = store
        self.write_on = write_on
        self.tally = ChunkTally()
        self._done = set(done)
        for summary in done.values():
            self.tally.add(summary)
        self._resumed_runs = self.tally.runs

    @property
    def worker_store(self) -> ZarrStore | None:
        """The store the workers write to, or None when the client writes."""
        return self.store if self.write_on == "workers" else None

    @property
    def done_runs(self) -> int:
        """Runs found finished in the store when this sink was made."""
        return self._resumed_runs

    @property
    def done_chunks(self) -> int:
        return len(self._done)

    def todo(self) -> Iterator[Chunk]:
        """Chunks without a completion marker, in order (lazily)."""
        return (c for c in self.layout.plan.chunks if c.index not in self._done)

    def add(self, chunk: Chunk, result: xr.Dataset | Mapping[str, Any]) -> None:
        """Count a chunk a worker wrote (its summary), or write a returned Dataset."""
        if isinstance(result, xr.Dataset):
            result = self.store.write_chunk(self.layout, chunk, result)
        self.tally.add(result)

    def finish(self, provenance: Mapping[str, Any]) -> xr.Dataset:
        """Final attributes into the store; the store, opened lazily."""
        n_runs = self.layout.sweep.n_runs
        if self.tally.runs != n_runs:
            raise RuntimeError(f"only {self.tally.runs} of {n_runs} runs have been written")
        attrs = self.layout.attrs(self.tally.summed, self.tally.targets, provenance)
        attrs["status_counts"] = _json(self.tally.status_counts)
        self.store.finish(attrs)
        return open_sweep(self.store.path)


def _json(counts: Mapping[str, int]) -> str:
    return json.dumps(dict(sorted(counts.items(), key=lambda kv: int(kv[0]))))
