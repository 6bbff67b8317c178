"""Chunk planning: how many runs go into each task, and which runs.

Pure arithmetic, no dask: :func:`plan_chunks` turns a sweep's run array
(a grid's axis lengths, else ``(n_runs,)``), the bytes one run needs on a
device (inputs + outputs + scratch, from the kernel's registry) and the
usable memory of each worker into a :class:`Plan`.

Rules for the chunk size, strongest first:

1. **Memory.** No chunk needs more than the binding budget,
   ``floor(safety * min(worker_budgets))`` bytes (and no chunk holds more
   than ``max_chunk_runs`` runs when given). If one run does not fit,
   :func:`plan_chunks` raises.
2. **Device fill.** Chunks hold at least ``min_chunk_runs`` runs where the
   sweep is long enough, unless rule 1 forbids it.
3. **Balance.** About ``chunks_per_worker * n_workers`` chunks (chunks of
   ``ceil(n_runs / wanted)`` runs) when rules 1 and 2 allow, so work
   spreads and a lost chunk is cheap to redo.

Chunks are **regular blocks** of the run array, so that a Zarr store can
use them as its chunks and no two tasks ever write the same Zarr chunk:
every chunk but the last along the split axis has the same shape
(:class:`ChunkSequence`). A grid's chunks are whole blocks of its axes
(blocks ``(125, 10)`` of a ``(1000, 10)`` grid are runs ``[j*1250,
(j+1)*1250)``), which costs at most a factor in chunk size when the later
axes do not divide the size the rules ask for. Chunks are computed on
demand, so a plan for 10**9 runs in 10**6 chunks costs a few integers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

#: Which rule set a plan's chunk count (``Plan.limited_by``).
LIMITS = ("budget", "max_chunk_runs", "balance", "min_chunk_runs")

_MB = 1e6
_REPR_EDGE = 3  # chunks shown at each end of Plan's repr


def plural(count: int, noun: str) -> str:
    """``"1 chunk"``, ``"1,250 chunks"``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def format_bytes(nbytes: float) -> str:
    """Bytes in decimal units with three significant digits, e.g. ``1.43 kB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def _mb(nbytes: int) -> str:
    """Bytes as MB (10**6 bytes) for the repr table."""
    mb = nbytes / _MB
    return f"{mb:,.1f}" if mb >= 100 else f"{mb:.3g}"


def _positive_int(value: Any, field: str) -> int:
    """``value`` as an int >= 1, with errors naming ``field``."""
    if isinstance(value, bool):
        raise TypeError(f"{field} must be a positive int, got a bool ({value!r})")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{field} must be a positive int, got {value!r} ({type(value).__name__})"
        ) from None
    if value < 1:
        raise ValueError(f"{field} must be a positive int (>= 1), got {value}")
    return value


@attrs.frozen
class Chunk:
    """Runs ``[start, stop)`` of a sweep, the ``index``-th chunk of its plan."""

    index: int
    start: int
    stop: int

    @property
    def n_runs(self) -> int:
        """Number of runs in the chunk."""
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        """``slice(start, stop)``, to index run-ordered arrays."""
        return slice(self.start, self.stop)


@attrs.frozen
class ChunkSequence(Sequence):
    """The chunks of a plan, computed from their index on access.

    The sweep's runs form an array of ``shape`` in C order (a grid's axes,
    else ``(n_runs,)``). Every chunk fixes one index on each axis before
    ``split_axis``, takes ``split_size`` consecutive indices (fewer at the
    end) on ``split_axis`` and every index on the axes after it: a block of
    that array, and a contiguous run range. Chunk ``j`` is block
    ``divmod(j, per_row)`` with ``per_row = ceil(shape[split_axis] /
    split_size)``.

    A read-only sequence of :class:`Chunk`: ``len``, integer indexing
    (negative allowed), iteration; a slice returns a list of chunks.
    """

    shape: tuple[int, ...]
    split_axis: int
    split_size: int

    @property
    def per_row(self) -> int:
        """Chunks along the split axis."""
        return -(-self.shape[self.split_axis] // self.split_size)

    @property
    def tail(self) -> int:
        """Runs in one index step of the split axis (product of the later axes)."""
        return math.prod(self.shape[self.split_axis + 1:])

    def __len__(self) -> int:
        return math.prod(self.shape[: self.split_axis]) * self.per_row

    def _chunk(self, j: int) -> Chunk:
        row, k = divmod(j, self.per_row)
        length = self.shape[self.split_axis]
        base = row * length * self.tail
        lo = k * self.split_size
        hi = min(lo + self.split_size, length)
        return Chunk(j, base + lo * self.tail, base + hi * self.tail)

    def block(self, chunk: Chunk) -> tuple[slice, ...]:
        """The chunk's block of the sweep array: one slice per axis of ``shape``."""
        row, k = divmod(chunk.index, self.per_row)
        lead = np.unravel_index(row, self.shape[: self.split_axis]) if self.split_axis else ()
        lo = k * self.split_size
        hi = min(lo + self.split_size, self.shape[self.split_axis])
        return (
            *(slice(int(i), int(i) + 1) for i in lead),
            slice(lo, hi),
            *(slice(0, n) for n in self.shape[self.split_axis + 1:]),
        )

    def __getitem__(self, key: int | slice) -> Chunk | list[Chunk]:
        n_chunks = len(self)
        if isinstance(key, slice):
            return [self._chunk(j) for j in range(n_chunks)[key]]
        j = operator.index(key)
        if j < 0:
            j += n_chunks
        if not 0 <= j < n_chunks:
            raise IndexError(f"chunk index {key} out of range for {n_chunks} chunks")
        return self._chunk(j)

    def __iter__(self) -> Iterator[Chunk]:
        return (self._chunk(j) for j in range(len(self)))


def align(shape: tuple[int, ...], max_runs: int) -> tuple[int, int]:
    """``(split_axis, split_size)`` of the largest aligned blocks of <= ``max_runs`` runs.

    The split axis is the first axis whose later axes hold at most
    ``max_runs`` runs together; the block takes as many of its indices as fit.
    """
    for axis in range(len(shape)):
        tail = math.prod(shape[axis + 1:])
        if tail <= max_runs:
            return axis, min(shape[axis], max_runs // tail)
    raise AssertionError("unreachable: the last axis has a tail of 1")


@attrs.frozen(repr=False)
class Plan:
    """How a sweep of ``n_runs`` runs is cut into chunks.

    Attributes
    ----------
    n_runs
        Runs in the sweep.
    shape
        The sweep's run array (a grid's axis lengths, else ``(n_runs,)``).
    split_axis, split_size
        Chunks are blocks of ``shape``: see :class:`ChunkSequence`. A store's
        Zarr chunks are the same blocks (:attr:`block_shape`).
    per_run_bytes
        Device bytes one run needs.
    budget_bytes
        The binding budget, ``floor(safety * min(worker_budgets))``.
    n_workers
        Number of worker budgets planned for.
    limited_by
        Which rule (one of :data:`LIMITS`) set the chunk size.
    """

    n_runs: int
    shape: tuple[int, ...]
    split_axis: int
    split_size: int
    per_run_bytes: int
    budget_bytes: int
    n_workers: int
    limited_by: str

    def __attrs_post_init__(self) -> None:
        if math.prod(self.shape) != self.n_runs:
            raise ValueError(f"shape {self.shape} does not hold n_runs={self.n_runs} runs")
        if not 0 <= self.split_axis < len(self.shape):
            raise ValueError(f"split_axis must be in [0, {len(self.shape)}), got {self.split_axis}")
        if not 1 <= self.split_size <= self.shape[self.split_axis]:
            raise ValueError(
                f"split_size must be in [1, {self.shape[self.split_axis]}], got {self.split_size}"
            )
        if self.chunk_bytes > self.budget_bytes:
            raise ValueError(
                f"chunks of {self.chunk_runs} runs x {self.per_run_bytes} bytes = "
                f"{self.chunk_bytes} bytes exceed budget_bytes={self.budget_bytes}"
            )
        if self.limited_by not in LIMITS:
            raise ValueError(f"limited_by must be one of {LIMITS}, got {self.limited_by!r}")

    @property
    def chunks(self) -> ChunkSequence:
        """All chunks, in run order, computed on access."""
        return ChunkSequence(self.shape, self.split_axis, self.split_size)

    @property
    def n_chunks(self) -> int:
        """Number of chunks (also ``len(plan)``)."""
        return len(self.chunks)

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Shape of a whole chunk's block of the sweep array (the Zarr chunk shape)."""
        return tuple(
            1 if axis < self.split_axis else self.split_size if axis == self.split_axis else n
            for axis, n in enumerate(self.shape)
        )

    @property
    def chunk_runs(self) -> int:
        """Runs in the largest chunk."""
        return math.prod(self.block_shape)

    @property
    def chunk_bytes(self) -> int:
        """Device bytes of the largest chunk (never above ``budget_bytes``)."""
        return self.chunk_runs * self.per_run_bytes

    def __len__(self) -> int:
        return self.n_chunks

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self.chunks)

    def __getitem__(self, key: int | slice) -> Chunk | list[Chunk]:
        return self.chunks[key]

    def __repr__(self) -> str:
        blocks = ""
        if len(self.shape) > 1:
            blocks = f"; blocks {self.block_shape} of grid {self.shape}"
        lines = [
            f"Plan: {plural(self.n_runs, 'run')} in {plural(self.n_chunks, 'chunk')} of <= "
            f"{self.chunk_runs:,} runs x {format_bytes(self.per_run_bytes)} = "
            f"{format_bytes(self.chunk_bytes)} (budget {format_bytes(self.budget_bytes)} per "
            f"worker, {self.n_workers} worker(s); set by {self.limited_by}{blocks})",
            f"{'chunk':>12} {'start':>14} {'stop':>14} {'runs':>12} {'MB':>10}",
        ]
        chunks = self.chunks
        n_chunks = len(chunks)
        if n_chunks <= 2 * _REPR_EDGE + 1:
            shown: list = list(chunks)
        else:
            shown = chunks[:_REPR_EDGE] + [None] + chunks[-_REPR_EDGE:]
        for chunk in shown:
            if chunk is None:
                lines.append(f"{'...':>12}")
                continue
            lines.append(
                f"{chunk.index:>12,} {chunk.start:>14,} {chunk.stop:>14,} "
                f"{chunk.n_runs:>12,} {_mb(chunk.n_runs * self.per_run_bytes):>10}"
            )
        return "\n".join(lines)


def plan_chunks(
    n_runs: int,
    per_run_bytes: int,
    worker_budgets: Sequence[int],
    *,
    shape: Sequence[int] | None = None,
    min_chunk_runs: int = 1,
    chunks_per_worker: int = 4,
    safety: float = 0.8,
    max_chunk_runs: int | None = None,
) -> Plan:
    """Cut ``n_runs`` runs into regular chunks that fit every worker.

    Parameters
    ----------
    n_runs
        Runs in the sweep, at least 1.
    per_run_bytes
        Device bytes one run needs (inputs + outputs + scratch), at least 1.
    worker_budgets
        Usable memory per worker in bytes (GPU free memory or dask memory
        limit); the smallest one binds, since any chunk may land anywhere.
    shape
        The run array the chunks are blocks of: a grid sweep's axis lengths
        (C order, last fastest), whose product is ``n_runs``. Default
        ``(n_runs,)``.
    min_chunk_runs
        Runs that fill one device (e.g. SMs x threads per SM). Chunks are at
        least this big where the sweep allows and the budget permits.
    chunks_per_worker
        Wanted chunks per worker, for balance and cheap retries.
    safety
        Fraction of the smallest budget that chunks may use, in (0, 1].
    max_chunk_runs
        Optional hard cap on runs per chunk; like the budget, it overrides
        ``min_chunk_runs``.

    Returns
    -------
    Plan
        Regular, aligned chunks as large as the rules of this module allow.

    Raises
    ------
    ValueError
        If an argument is out of range, ``shape`` does not hold ``n_runs``
        runs, or one run needs more than the budget.
    """
    n_runs = _positive_int(n_runs, "n_runs")
    per_run_bytes = _positive_int(per_run_bytes, "per_run_bytes")
    if shape is None:
        shape = (n_runs,)
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
        raise TypeError(f"shape must be a sequence of positive ints, got {shape!r}")
    shape = tuple(_positive_int(n, f"shape[{i}]") for i, n in enumerate(shape))
    if not shape or math.prod(shape) != n_runs:
        raise ValueError(f"shape {shape} must hold n_runs={n_runs} runs (product of its lengths)")
    if isinstance(worker_budgets, (str, bytes, Mapping)) or not isinstance(
        worker_budgets, Iterable
    ):
        raise TypeError(
            "worker_budgets must be a sequence of ints (bytes per worker), got "
            f"{worker_budgets!r}; wrap a single budget in a list, pass a "
            "mapping's .values()"
        )
    budgets = [_positive_int(b, f"worker_budgets[{i}]") for i, b in enumerate(worker_budgets)]
    if not budgets:
        raise ValueError("worker_budgets is empty; it needs one budget per worker")
    min_chunk_runs = _positive_int(min_chunk_runs, "min_chunk_runs")
    chunks_per_worker = _positive_int(chunks_per_worker, "chunks_per_worker")
    if max_chunk_runs is not None:
        max_chunk_runs = _positive_int(max_chunk_runs, "max_chunk_runs")
    if isinstance(safety, bool) or not isinstance(safety, (int, float)):
        raise TypeError(f"safety must be a float in (0, 1], got {safety!r}")
    if not (math.isfinite(safety) and 0 < safety <= 1):
        raise ValueError(f"safety must be in (0, 1], got {safety!r}")

    smallest = min(budgets)
    # exact decimal arithmetic: safety 0.95 means 19/20, not the binary float
    budget_bytes = math.floor(Fraction(str(float(safety))) * smallest)
    fit = budget_bytes // per_run_bytes
    if fit < 1:
        raise ValueError(
            f"one run needs per_run_bytes={per_run_bytes} bytes but the binding "
            f"budget is {budget_bytes} bytes (safety {safety} x smallest worker "
            f"budget {smallest} bytes); free memory, add memory, or lower the "
            "per-run size (fewer saved points or variables)"
        )

    cap, cap_rule = fit, "budget"
    if max_chunk_runs is not None and max_chunk_runs < fit:
        cap, cap_rule = max_chunk_runs, "max_chunk_runs"
    balanced = -(-n_runs // (chunks_per_worker * len(budgets)))   # rule 3
    if balanced >= min_chunk_runs:
        size, limited_by = balanced, "balance"
    else:
        size, limited_by = min(min_chunk_runs, n_runs), "min_chunk_runs"  # rule 2
    if size > cap:
        size, limited_by = cap, cap_rule                           # rule 1
    split_axis, split_size = align(shape, size)
    return Plan(
        n_runs=n_runs,
        shape=shape,
        split_axis=split_axis,
        split_size=split_size,
        per_run_bytes=per_run_bytes,
        budget_bytes=budget_bytes,
        n_workers=len(budgets),
        limited_by=limited_by,
    )
