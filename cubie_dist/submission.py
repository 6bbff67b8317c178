"""The submission loop: chunk tasks in a bounded window, results handed on as they land.

:func:`run_chunks` is the only place that talks to the scheduler about
chunks: it keeps at most ``window`` futures in flight (so a plan with 10**6
chunks never floods the scheduler), gives each finished result to a
callback (a sink, :mod:`cubie_dist.sinks`) and releases it at once. A
failed chunk (after the scheduler's ``retries``) cancels the outstanding
futures and raises :class:`ChunkFailedError` naming its run range with the
worker's traceback. A chunk whose worker died is re-run by the scheduler
elsewhere; that costs nothing here.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from typing import Any

from distributed import Client, Future, as_completed

from cubie_dist.chunks import Chunk


class ChunkFailedError(RuntimeError):
    """A chunk task raised after its retries.

    Attributes
    ----------
    chunk
        The failed :class:`~cubie_dist.chunks.Chunk` (index and run range).
    worker_traceback
        The traceback formatted on the worker, as text.
    """

    def __init__(self, message: str, chunk: Chunk, worker_traceback: str) -> None:
        super().__init__(message)
        self.chunk = chunk
        self.worker_traceback = worker_traceback


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


def run_chunks(
    client: Client,
    chunks: Iterable[Chunk],
    submit: Callable[[Chunk], Future],
    on_result: Callable[[Chunk, Any], None],
    *,
    n_chunks: int,
    window: int,
    retries: int,
    progress: Any,
) -> None:
    """Submit ``chunks`` (at most ``window`` in flight); hand on results as they complete.

    Parameters
    ----------
    client
        The client the futures belong to.
    chunks
        Chunks in submission order (an iterable: never listed whole).
    submit
        Submits one chunk's task and returns its future.
    on_result
        Called with each finished chunk and its task's result, on the client.
    n_chunks, retries
        For messages.
    window
        Most futures outstanding at once.
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
            on_result(chunk, result)
            progress.update(chunk.n_runs)
            future.release()
            top_up()
        finished = True
    finally:
        if not finished and in_flight:
            client.cancel([future for _, future in in_flight.values()])
        progress.close()
