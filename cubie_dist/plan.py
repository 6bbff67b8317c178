"""Chunk planning: how many runs go into each task.

Pure arithmetic, no dask: :func:`plan_chunks` turns a run count, the bytes
one run needs on a device (inputs + outputs + scratch, from the kernel's
registry) and the usable memory of each worker into a :class:`Plan` of
contiguous, balanced chunks covering ``[0, n_runs)``.

Rules, strongest first:

1. **Memory.** No chunk needs more than the binding budget,
   ``floor(safety * min(worker_budgets))`` bytes (and no chunk holds more
   than ``max_chunk_runs`` runs when given). If one run does not fit,
   :func:`plan_chunks` raises.
2. **Device fill.** Chunks hold at least ``min_chunk_runs`` runs where the
   sweep is long enough, unless rule 1 forbids it.
3. **Balance.** There are at least ``chunks_per_worker * n_workers`` chunks
   when rules 1 and 2 allow, so work spreads and a lost chunk is cheap to
   redo.

Within those rules chunks are as large as possible: the plan has the fewest
chunks that satisfy them. Sizes differ by at most one run (the larger ones
first), so chunk ``j`` starts at ``j * q + min(j, r)`` with
``q, r = divmod(n_runs, n_chunks)``. Chunks are computed on demand, so a plan
for 10**9 runs in 10**6 chunks costs a few integers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

import attrs

#: Which rule set a plan's chunk count (``Plan.limited_by``).
LIMITS = ("budget", "max_chunk_runs", "balance", "min_chunk_runs")

_MB = 1e6
_REPR_EDGE = 3  # chunks shown at each end of Plan's repr


def _size(nbytes: float) -> str:
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

    A read-only sequence of :class:`Chunk`: ``len``, integer indexing
    (negative allowed), iteration; a slice returns a list of chunks.
    """

    n_runs: int
    n_chunks: int

    def __len__(self) -> int:
        return self.n_chunks

    def _chunk(self, j: int) -> Chunk:
        q, r = divmod(self.n_runs, self.n_chunks)
        start = j * q + min(j, r)
        return Chunk(j, start, start + q + (j < r))

    def __getitem__(self, key: int | slice) -> Chunk | list[Chunk]:
        if isinstance(key, slice):
            return [self._chunk(j) for j in range(self.n_chunks)[key]]
        j = operator.index(key)
        if j < 0:
            j += self.n_chunks
        if not 0 <= j < self.n_chunks:
            raise IndexError(f"chunk index {key} out of range for {self.n_chunks} chunks")
        return self._chunk(j)

    def __iter__(self) -> Iterator[Chunk]:
        return (self._chunk(j) for j in range(self.n_chunks))


@attrs.frozen(repr=False)
class Plan:
    """How a sweep of ``n_runs`` runs is cut into chunks.

    Attributes
    ----------
    n_runs
        Runs in the sweep.
    n_chunks
        Number of chunks (also ``len(plan)``).
    per_run_bytes
        Device bytes one run needs.
    budget_bytes
        The binding budget, ``floor(safety * min(worker_budgets))``.
    n_workers
        Number of worker budgets planned for.
    limited_by
        Which rule (one of :data:`LIMITS`) set the chunk count.
    """

    n_runs: int
    n_chunks: int
    per_run_bytes: int
    budget_bytes: int
    n_workers: int
    limited_by: str

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.n_chunks <= self.n_runs:
            raise ValueError(
                f"n_chunks must be in [1, n_runs={self.n_runs}], got {self.n_chunks}"
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
        return ChunkSequence(self.n_runs, self.n_chunks)

    @property
    def chunk_runs(self) -> int:
        """Runs in the largest chunk."""
        return -(-self.n_runs // self.n_chunks)

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
        lines = [
            f"Plan: {self.n_runs:,} runs in {self.n_chunks:,} chunks of <= "
            f"{self.chunk_runs:,} runs x {_size(self.per_run_bytes)} = "
            f"{_size(self.chunk_bytes)} (budget {_size(self.budget_bytes)} per "
            f"worker, {self.n_workers} worker(s); set by {self.limited_by})",
            f"{'chunk':>12} {'start':>14} {'stop':>14} {'runs':>12} {'MB':>10}",
        ]
        chunks = self.chunks
        if self.n_chunks <= 2 * _REPR_EDGE + 1:
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
    min_chunk_runs: int = 1,
    chunks_per_worker: int = 4,
    safety: float = 0.8,
    max_chunk_runs: int | None = None,
) -> Plan:
    """Cut ``n_runs`` runs into chunks that fit every worker.

    Parameters
    ----------
    n_runs
        Runs in the sweep, at least 1.
    per_run_bytes
        Device bytes one run needs (inputs + outputs + scratch), at least 1.
    worker_budgets
        Usable memory per worker in bytes (GPU free memory or dask memory
        limit); the smallest one binds, since any chunk may land anywhere.
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
        The fewest balanced chunks that satisfy the rules of this module.

    Raises
    ------
    ValueError
        If an argument is out of range, or one run needs more than the budget.
    """
    n_runs = _positive_int(n_runs, "n_runs")
    per_run_bytes = _positive_int(per_run_bytes, "per_run_bytes")
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
    fewest = -(-n_runs // cap)                      # rule 1: fewest chunks that fit
    most = max(1, n_runs // min_chunk_runs)         # rule 2: smallest chunk >= min
    wanted = chunks_per_worker * len(budgets)       # rule 3: balance
    balanced = min(wanted, most)
    if fewest >= balanced:
        n_chunks, limited_by = fewest, cap_rule
    elif balanced == wanted:
        n_chunks, limited_by = wanted, "balance"
    else:
        n_chunks, limited_by = most, "min_chunk_runs"
    return Plan(
        n_runs=n_runs,
        n_chunks=n_chunks,
        per_run_bytes=per_run_bytes,
        budget_bytes=budget_bytes,
        n_workers=len(budgets),
        limited_by=limited_by,
    )
