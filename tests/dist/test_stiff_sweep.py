"""A stiff sweep through cubie_dist: Robertson's kinetics over a grid of rate
constants with a Rosenbrock method, on a LocalCluster into a Zarr store."""

from __future__ import annotations

import numpy as np
import xarray as xr
import yaml

import cubie_dist as cd
from cubie_dist.sweep_file import parse_sweep_file
from cubie_kernel import Output, Solver
from cubie_kernel.systems import robertson

SETTINGS = dict(method="rodas5p", rtol=1e-6, atol=1e-12,
                output=Output(states=[], observables=[], final_state=True))
DURATION = 1.0e5


def test_robertson_grid_on_a_local_cluster_equals_a_direct_solve(client, tmp_path):
    spec = cd.SolverSpec(robertson(), **SETTINGS)
    sweep = cd.Sweep.grid(k1=np.logspace(-3, 0, 12), k3=np.logspace(3, 5, 10))
    path = tmp_path / "robertson.zarr"
    cd.run_sweep(spec, sweep, DURATION, client=client, store=path, progress=False)
    rows = sweep.inputs()
    direct = Solver(robertson(), target="cpu", **SETTINGS).solve(
        parameters={"k1": rows["k1"], "k3": rows["k3"]}, duration=DURATION, grid="verbatim")
    loaded = xr.open_zarr(path).load()
    assert loaded["c_final"].dims == ("k1", "k3")
    for name in ("a_final", "b_final", "c_final", "status", "n_steps", "n_rejected"):
        flat = loaded[name].values.reshape(sweep.n_runs)
        np.testing.assert_array_equal(flat, direct[name].values, err_msg=name)
    assert np.all(loaded["status"].values == 0)
    # every run conserves mass
    total = loaded["a_final"] + loaded["b_final"] + loaded["c_final"]
    np.testing.assert_allclose(total.values, 1.0, rtol=1e-6)


def test_a_sweep_file_takes_a_stiff_method_and_a_user_jacobian():
    document = {
        "system": {
            "equations": ["dy = -k*y**2"], "states": {"y": 1.0}, "parameters": {"k": 1.0},
            "jacobian": {"y": {"y": "-2*k*y"}}, "name": "second_order_decay",
        },
        "solver": {"method": "rodas4", "rtol": 1e-8, "atol": 1e-10,
                   "output": {"final_state": True, "states": [], "observables": []}},
        "sweep": {"kind": "grid", "axes": {"k": {"logspace": [0, 4, 5]}}},
        "duration": 10.0,
    }
    job = parse_sweep_file(yaml.safe_load(yaml.safe_dump(document)))
    assert job.spec.system.jacobian == {"y": {"y": "-2*k*y"}}
    solver = Solver(job.spec.system, method="rodas4", rtol=1e-8, atol=1e-10,
                    output={"final_state": True, "states": [], "observables": []})
    k = np.logspace(0, 4, 5)
    solved = solver.solve(parameters={"k": k}, duration=10.0)
    np.testing.assert_allclose(solved["y_final"].values, 1.0 / (1.0 + 10.0 * k), rtol=1e-6)
