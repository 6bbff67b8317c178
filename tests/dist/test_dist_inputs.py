"""Client-side checks: SolverSpec, input roles, and bad input failing before submission.

Submission-side tests use a cluster with NO workers: a task submitted there
would wait forever, and the scheduler records every task prefix it ever
saw, so "nothing was submitted" is checked, not assumed.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
from distributed import Client, LocalCluster

import cubie_dist as cd
from cubie_dist.inputs import RunInputs, chunk_inputs, fixed_input_attrs, resolve_inputs
from cubie_dist.spec import canonical_value
from cubie_kernel import ODESystem
from cubie_kernel.systems import exponential_decay, lorenz

SETTINGS = dict(method="rk4", dt=0.01, save_every=0.5)


@pytest.fixture(scope="module")
def empty_client():
    """A client whose scheduler has no workers: submission would hang."""
    with LocalCluster(
        n_workers=0, processes=False, dashboard_address=":0", silence_logs=logging.ERROR
    ) as cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _scheduler_saw(dask_scheduler) -> dict:
    return {
        "tasks": len(dask_scheduler.tasks),
        "prefixes": sorted(dask_scheduler.task_prefixes),
        "cubie_plugin": "cubie-solver" in dask_scheduler.worker_plugins,
    }


def assert_nothing_submitted(client: Client) -> None:
    saw = client.run_on_scheduler(_scheduler_saw)
    assert saw == {"tasks": 0, "prefixes": [], "cubie_plugin": False}


@pytest.fixture(scope="module")
def spec():
    return cd.SolverSpec(lorenz(), **SETTINGS)


# ------------------------------------------------------------------ SolverSpec
def test_spec_keeps_settings_verbatim_and_is_immutable(spec):
    assert spec.settings == SETTINGS
    assert spec.target == "auto"
    assert spec.system == lorenz()
    with pytest.raises(AttributeError, match="immutable"):
        spec.foo = 1


def test_spec_pickles_by_value(spec):
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and again.token() == spec.token()
    assert again.settings == spec.settings and again.system == spec.system
    assert again.per_run_bytes(1.0) == spec.per_run_bytes(1.0)


def test_spec_token_is_stable_across_processes(spec):
    code = (
        "import cubie_dist as cd; from cubie_kernel.systems import lorenz; "
        f"print(cd.SolverSpec(lorenz(), **{SETTINGS!r}).token())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == spec.token()
    assert len(spec.token()) == 64 and int(spec.token(), 16) >= 0


def test_spec_token_follows_system_and_settings(spec):
    same = cd.SolverSpec(lorenz(), save_every=0.5, dt=0.01, method="rk4")  # order irrelevant
    assert same.token() == spec.token() and same == spec and hash(same) == hash(spec)
    assert cd.SolverSpec(lorenz(), **{**SETTINGS, "dt": 0.02}).token() != spec.token()
    assert cd.SolverSpec(lorenz(rho=20.0), **SETTINGS).token() != spec.token()
    assert cd.SolverSpec(lorenz(), **SETTINGS, target="cpu").token() != spec.token()
    # a numpy type and its name build the same kernel, so they share a token
    a = cd.SolverSpec(lorenz(), **SETTINGS, precision=np.float64)
    b = cd.SolverSpec(lorenz(), **SETTINGS, precision="float64")
    assert a.token() == b.token()
    assert a.settings["precision"] is np.float64  # still verbatim


def test_canonical_values():
    assert canonical_value(np.float32, "p") == "float32"
    assert canonical_value(np.dtype("float64"), "p") == "float64"
    assert canonical_value(np.int64(3), "n") == 3
    assert canonical_value(np.array([1e-6, 1e-8]), "atol") == [1e-6, 1e-8]
    assert canonical_value((1, None, True), "t") == [1, None, True]
    with pytest.raises(TypeError, match="'thing'"):
        canonical_value(object(), "'thing'")


def test_spec_per_run_bytes_is_the_kernels_figure(spec):
    from cubie_kernel import Solver

    direct = Solver(lorenz(), target="cpu", **SETTINGS).kernel.per_run_device_bytes(2.0)
    assert spec.per_run_bytes(2.0) == direct
    assert spec.per_run_bytes(4.0) > spec.per_run_bytes(2.0)  # more saves


@pytest.mark.parametrize(
    "settings, error, words",
    [
        ({"method": "rk4", "dt": 0.01, "bogus": 1}, ValueError, ["bogus"]),
        ({"method": "rk4", "dt": -0.01}, ValueError, ["dt"]),
        ({"method": "no_such_method", "dt": 0.01}, (ValueError, KeyError), ["no_such_method"]),
        ({"method": "rk4", "dt": 0.01, "target": "tpu"}, ValueError, ["target", "tpu"]),
        ({"method": "rk4", "dt": 0.01, "precision": "float16"}, ValueError, ["precision"]),
        ({"method": "rk4", "dt": 0.01, "registry": None}, ValueError, ["registry"]),
        ({"method": "rk4", "dt": 0.01, "save_every": object()}, TypeError, ["save_every"]),
    ],
)
def test_bad_solver_settings_fail_on_the_client(settings, error, words):
    with pytest.raises(error) as info:
        cd.SolverSpec(lorenz(), **settings)
    for word in words:
        assert word in str(info.value)


def test_spec_needs_an_ode_system():
    with pytest.raises(TypeError, match="ODESystem"):
        cd.SolverSpec("lorenz", **SETTINGS)


# ---------------------------------------------------------------- input roles
def test_states_are_initial_values_and_parameters_parameters():
    system = lorenz()
    sweep = cd.Sweep.zip(rho=[10.0, 20.0, 30.0], y=[0.5, 0.6, 0.7])
    inputs = resolve_inputs(system, sweep, {"x": 2.0}, {"sigma": 9.0})
    assert inputs == RunInputs(("y",), ("rho",), {"x": 2.0}, {"sigma": 9.0})
    initial, params = chunk_inputs(sweep, inputs, 1, 3)
    assert initial["x"] == 2.0 and params["sigma"] == 9.0
    np.testing.assert_array_equal(initial["y"], [0.6, 0.7])
    np.testing.assert_array_equal(params["rho"], [20.0, 30.0])
    assert set(initial) == {"x", "y"} and set(params) == {"rho", "sigma"}
    # every input the sweep does not vary, explicit value else default
    assert fixed_input_attrs(system, inputs) == {
        "initial_x": 2.0,
        "initial_z": 0.0,
        "parameter_sigma": 9.0,
        "parameter_beta": 8.0 / 3.0,
    }


@pytest.mark.parametrize(
    "sweep, initial_values, parameters, words",
    [
        (cd.Sweep.grid(rho=[1.0], omega=[2.0]), None, None,
         ["omega", "x", "y", "z", "sigma", "rho", "beta"]),
        (cd.Sweep.grid(rho=[1.0]), {"w": 1.0}, None, ["initial_values", "w", "x"]),
        (cd.Sweep.grid(rho=[1.0]), None, {"x": 1.0}, ["parameters", "'x'", "sigma"]),
        (cd.Sweep.grid(rho=[1.0]), None, {"rho": 1.0}, ["rho", "sweep"]),
        (cd.Sweep.grid(rho=[1.0]), {"x": math.nan}, None, ["initial_values['x']", "finite"]),
        (cd.Sweep.grid(rho=[1.0]), None, {"beta": [1.0, 2.0]}, ["parameters['beta']", "Sweep"]),
        (cd.Sweep.grid(rho=[1.0]), None, {"beta": True}, ["parameters['beta']"]),
    ],
)
def test_bad_input_roles(sweep, initial_values, parameters, words):
    with pytest.raises(ValueError) as info:
        resolve_inputs(lorenz(), sweep, initial_values, parameters)
    for word in words:
        assert word in str(info.value)


# ---------------------------------------------- bad input never reaches a cluster
BIG_AXIS = np.arange(2**16, dtype=np.float64)  # 4 axes: 2**64 runs > int64


@pytest.mark.parametrize(
    "make_call, error, words",
    [
        # unknown sweep name
        (lambda s, c: cd.run_sweep(s, cd.Sweep.grid(omega=[1.0]), 1.0, client=c),
         ValueError, ["omega", "sigma"]),
        # unknown fixed name
        (lambda s, c: cd.run_sweep(s, cd.Sweep.grid(rho=[1.0]), 1.0, {"q": 1.0}, client=c),
         ValueError, ["q"]),
        # empty axis
        (lambda s, c: cd.run_sweep(s, cd.Sweep.grid(rho=[]), 1.0, client=c),
         ValueError, ["rho", "empty"]),
        # mismatched zip lengths
        (lambda s, c: cd.run_sweep(s, cd.Sweep.zip(rho=[1.0, 2.0], sigma=[1.0]), 1.0, client=c),
         ValueError, ["equal lengths"]),
        # NaN in a sweep
        (lambda s, c: cd.run_sweep(s, cd.Sweep.table({"rho": [1.0, np.nan]}), 1.0, client=c),
         ValueError, ["rho", "finite"]),
        # NaN fixed value
        (lambda s, c: cd.run_sweep(s, cd.Sweep.grid(rho=[1.0]), 1.0, None, {"beta": np.nan},
                                   client=c),
         ValueError, ["beta", "finite"]),
        # more runs than int64
        (lambda s, c: cd.run_sweep(s, cd.Sweep.grid(a=BIG_AXIS, b=BIG_AXIS, c=BIG_AXIS,
                                                     d=BIG_AXIS), 1.0, client=c),
         ValueError, ["int64"]),
        # bad solver settings
        (lambda s, c: cd.run_sweep(cd.SolverSpec(lorenz(), method="rk4", dt=0.01, foo=2),
                                   cd.Sweep.grid(rho=[1.0]), 1.0, client=c),
         ValueError, ["foo"]),
        # bad times and options
        (lambda s, c: cd.run_sweep(s, cd.Sweep.grid(rho=[1.0]), 0.0, client=c),
         ValueError, ["duration"]),
        (lambda s, c: cd.run_sweep(s, cd.Sweep.grid(rho=[1.0]), 1.0, warmup=-1.0, client=c),
         ValueError, ["warmup"]),
        (lambda s, c: cd.run_sweep(s, cd.Sweep.grid(rho=[1.0]), 1.0, retries=-1, client=c),
         ValueError, ["retries"]),
        (lambda s, c: cd.run_sweep(s, {"rho": [1.0]}, 1.0, client=c),
         TypeError, ["Sweep"]),
        (lambda s, c: cd.run_sweep(s, cd.Sweep.grid(rho=[1.0]), 1.0, client="tcp://x:1"),
         TypeError, ["client"]),
    ],
    ids=[
        "unknown-sweep-name", "unknown-fixed-name", "empty-axis", "zip-lengths", "nan-sweep",
        "nan-fixed", "int64", "solver-settings", "duration", "warmup", "retries", "not-a-sweep",
        "not-a-client",
    ],
)
def test_bad_input_fails_before_submission(empty_client, spec, make_call, error, words):
    with pytest.raises(error) as info:
        make_call(spec, empty_client)
    for word in words:
        assert word in str(info.value)
    assert_nothing_submitted(empty_client)


def test_planning_without_workers_says_so(empty_client, spec):
    with pytest.raises(RuntimeError, match="no workers"):
        cd.run_sweep(spec, cd.Sweep.grid(rho=[1.0, 2.0]), 1.0, client=empty_client)
    assert_nothing_submitted(empty_client)


def test_attrs_helpers_are_json(spec):
    # the spec's canonical settings are what run_sweep stores as JSON
    assert json.loads(json.dumps(spec.canonical_settings())) == {
        "dt": 0.01, "method": "rk4", "save_every": 0.5,
    }
    assert ODESystem(**json.loads(json.dumps(spec.system.to_dict()))) == spec.system


def test_chunk_inputs_of_a_single_run_broadcast_scalars():
    system = exponential_decay()
    sweep = cd.Sweep.sample(5, {"k": (0.5, 1.5)}, seed=3)
    inputs = resolve_inputs(system, sweep, {"y": 2.0})
    initial, params = chunk_inputs(sweep, inputs, 4, 5)
    assert initial == {"y": 2.0}
    np.testing.assert_array_equal(params["k"], sweep.inputs(4, 5)["k"])
