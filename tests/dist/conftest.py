"""Fixtures shared by the cubie_dist tests."""

from __future__ import annotations

import logging

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two worker processes, one thread each (one numba thread
    each too), per test module that asks for it."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
        env={"NUMBA_NUM_THREADS": "1"},
    ) as cluster, Client(cluster, set_as_default=False) as client:
        yield client
