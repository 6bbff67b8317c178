"""The embedded default cluster: what ``run_sweep(client=None)`` starts.

On a machine with a real CUDA GPU: dask-cuda's ``LocalCUDACluster``, one
worker process per GPU (``CUDA_VISIBLE_DEVICES`` set before CUDA starts in
each), each advertising the resource ``GPU=1``. Otherwise a
``distributed.LocalCluster`` with one worker process per core, one thread
each, and ``NUMBA_NUM_THREADS=1`` in their environment so the cores are not
oversubscribed; a spec's ``target="auto"`` resolves to cpu on those workers.
GPUs are detected first because ``LocalCUDACluster`` raises without one.

Worker processes are spawned, and a spawned process imports the main
script again (as ``__mp_main__``). A script that starts the cluster from
unguarded top-level code would start it again in every worker, which
fails there and leaves the first cluster waiting forever for its workers.
:func:`start_local_cluster` therefore refuses, at once and with the fix
(:class:`MainGuardError`), to start from a script line that is not inside
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import multiprocessing
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dask.system import CPU_COUNT
from distributed import Client, LocalCluster

from cubie_kernel import targets


class MainGuardError(RuntimeError):
    """The embedded cluster was asked for from a script's unguarded top-level code."""


def _is_main_guard(node: ast.stmt) -> bool:
    """Whether ``node`` is ``if __name__ == "__main__":`` (either operand order)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


def unguarded_main_line() -> tuple[str, int] | None:
    """``(script, line)`` if this call comes from unguarded top-level code of the
    main script, else None (guarded, interactive, a notebook, no script file)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not str(path).endswith(".py"):
        return None
    frame, line = sys._getframe(1), None
    while frame is not None:  # the outermost frame of the main script's own code
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back
    if line is None:
        return None
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            return None if _is_main_guard(node) else (str(path), line)
    return None


def _check_main_guard() -> None:
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise MainGuardError(
            "a worker process is importing the main script and reached code that starts "
            "a cluster; put the script's code under `if __name__ == \"__main__\":`"
        )
    where = unguarded_main_line()
    if where is not None:
        script, line = where
        raise MainGuardError(
            f"{script}, line {line}: the embedded cluster spawns worker processes, which "
            "import this script again; put the script's code under "
            "`if __name__ == \"__main__\":` (or pass client= a cluster started elsewhere)"
        )


def start_local_cluster(**kwargs: Any):
    """Start the embedded default cluster (the caller closes it).

    Parameters
    ----------
    **kwargs
        Overrides for the cluster class's keywords.

    Raises
    ------
    MainGuardError
        Called from unguarded top-level code of a script (see the module
        docstring), before any process is started.
    """
    _check_main_guard()
    options: dict[str, Any] = {"dashboard_address": ":0", "silence_logs": logging.ERROR}
    if targets.gpu_available():
        from dask_cuda import LocalCUDACluster

        options["resources"] = {"GPU": 1}
        return LocalCUDACluster(**{**options, **kwargs})
    options.update(
        n_workers=CPU_COUNT,
        threads_per_worker=1,
        processes=True,
        env={"NUMBA_NUM_THREADS": "1"},
    )
    return LocalCluster(**{**options, **kwargs})


@contextlib.contextmanager
def local_client(**kwargs: Any) -> Iterator[Client]:
    """A client of a freshly started embedded cluster; both closed on exit."""
    cluster = start_local_cluster(**kwargs)
    try:
        client = Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
