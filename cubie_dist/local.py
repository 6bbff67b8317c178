"""The embedded default cluster: what ``run_sweep(client=None)`` starts.

On a machine with a real CUDA GPU: dask-cuda's ``LocalCUDACluster``, one
worker process per GPU (``CUDA_VISIBLE_DEVICES`` set before CUDA starts in
each), each advertising the resource ``GPU=1``. Otherwise a
``distributed.LocalCluster`` with one worker process per core, one thread
each, and ``NUMBA_NUM_THREADS=1`` in their environment so the cores are not
oversubscribed; a spec's ``target="auto"`` resolves to cpu on those workers.
GPUs are detected first because ``LocalCUDACluster`` raises without one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from dask.system import CPU_COUNT
from distributed import Client, LocalCluster

from cubie_kernel import targets


def start_local_cluster(**kwargs: Any):
    """Start the embedded default cluster (the caller closes it).

    Parameters
    ----------
    **kwargs
        Overrides for the cluster class's keywords.
    """
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
